package scan

import (
	"testing"

	"slipway.dev/slipway/api"
)

// H5: the scanner scans an Image record only when its reference names the
// record's own digest in the record's own project of the integrated
// registry; a project admin can write Image records.
func TestOwnRef(t *testing.T) {
	c := &Controller{RegistryHost: "reg:5000"}
	d := "sha256:" + "ab"
	for _, tc := range []struct {
		name string
		ns   string
		ref  string
		want bool
	}{
		{"the registry's own record", "mal", "reg:5000/mal/app@" + d, true},
		{"a nested stream", "mal", "reg:5000/mal/team/app@" + d, true},
		{"H5 another digest", "mal", "reg:5000/mal/app@sha256:cd", false},
		{"H5 another project", "mal", "reg:5000/vic/app@" + d, false},
		{"H5 another registry", "mal", "evil.example/mal/app@" + d, false},
		{"H5 a project name prefix", "mal", "reg:5000/malware/app@" + d, false},
		{"H5 a tag", "mal", "reg:5000/mal/app:latest", false},
		{"H5 no stream", "mal", "reg:5000/mal/@" + d, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := &api.Image{ObjectMeta: api.ObjectMeta{Name: d, Namespace: tc.ns}, DockerImageReference: tc.ref}
			if got := c.ownRef(img); got != tc.want {
				t.Errorf("ownRef(%s in %s) = %v, want %v", tc.ref, tc.ns, got, tc.want)
			}
		})
	}
	if (&Controller{}).ownRef(&api.Image{ObjectMeta: api.ObjectMeta{Name: d, Namespace: "mal"}, DockerImageReference: "/mal/app@" + d}) {
		t.Error("a controller without a registry host scanned a record")
	}
}
