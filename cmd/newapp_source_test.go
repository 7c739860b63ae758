package cmd

import (
	"reflect"
	"testing"

	"slipway.dev/slipway/api"
)

func TestParseDockerfile(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		from       string
		ports      []int32
		err        bool
	}{
		{name: "simple", text: "FROM base:1\nEXPOSE 8080\n", from: "base:1", ports: []int32{8080}},
		{name: "multi-stage, continued EXPOSE", text: "FROM golang AS build\nRUN go build\nFROM --platform=linux/amd64 shop/base\n# EXPOSE 1\nEXPOSE 80/tcp \\\n 53/udp 80\n", from: "shop/base", ports: []int32{80, 53}},
		{name: "last stage is an earlier stage", text: "FROM base AS b\nFROM b\n", from: ""},
		{name: "variables are skipped", text: "FROM base\nEXPOSE $PORT 9090\n", from: "base", ports: []int32{9090}},
		{name: "no FROM", text: "RUN true\n", err: true},
		{name: "bad port", text: "FROM base\nEXPOSE 70000\n", err: true},
	} {
		info, err := parseDockerfile(tc.text)
		if (err != nil) != tc.err {
			t.Errorf("%s: err = %v, want error %v", tc.name, err, tc.err)
			continue
		}
		if tc.err {
			continue
		}
		var ports []int32
		for _, p := range info.ports {
			ports = append(ports, p.ContainerPort)
		}
		if info.from != tc.from || !reflect.DeepEqual(ports, tc.ports) {
			t.Errorf("%s: from %q ports %v; want %q %v", tc.name, info.from, ports, tc.from, tc.ports)
		}
	}
}

func TestSourceArgsAndNames(t *testing.T) {
	for arg, want := range map[string]bool{"shop": false, "./shop": true, ".": true, "/src/web": true, "https://git.example/a/b.git": true} {
		if got := isSourceArg(arg); got != want {
			t.Errorf("isSourceArg(%q) = %v, want %v", arg, got, want)
		}
	}
	for arg, want := range map[string]string{"/src/My_Web/": "my-web", "https://git.example/shop/api.git#v2": "api", "/src/2048": "app-2048"} {
		if got := defaultAppName(arg); got != want {
			t.Errorf("defaultAppName(%q) = %q, want %q", arg, got, want)
		}
	}
	for s, want := range map[string]*api.ObjectReference{
		"python:3.12":          {Kind: "ImageStreamTag", Name: "python:3.12"},
		"openshift/nginx:1.24": {Kind: "ImageStreamTag", Name: "nginx:1.24", Namespace: "openshift"},
		"shop/ruby":            {Kind: "ImageStreamTag", Name: "ruby:latest"},
		"a/b/c":                nil,
	} {
		got, err := builderStream("shop", s)
		if (err != nil) != (want == nil) || (want != nil && *got != *want) {
			t.Errorf("builderStream(%q) = %+v, %v; want %+v", s, got, err, want)
		}
	}
}

func TestExposedServices(t *testing.T) {
	var got []string
	for _, p := range exposedServices("8080:http, 8443/tcp:https,53/udp:dns,nope:x,8080:again") {
		got = append(got, p.Name)
	}
	if want := []string{"8080-tcp", "8443-tcp", "53-udp"}; !reflect.DeepEqual(got, want) {
		t.Errorf("exposedServices = %v, want %v", got, want)
	}
}
