package api

import (
	"strings"
	"testing"
)

func TestValidateRoute(t *testing.T) {
	w := func(n int32) *int32 { return &n }
	base := func() *Route {
		return &Route{ObjectMeta: ObjectMeta{Name: "web", Namespace: "shop"}, Spec: RouteSpec{Host: "www.example.com", To: RouteTargetReference{Name: "web"}}}
	}
	for _, tc := range []struct {
		row  string
		edit func(*Route)
		want string // "" valid; else field: detail fragment
	}{
		{"a plain route", func(*Route) {}, ""},
		{"a canary", func(r *Route) { r.Spec.AlternateBackends = []RouteTargetReference{{Name: "canary", Weight: w(10)}} }, ""},
		{"no host", func(r *Route) { r.Spec.Host = "" }, "spec.host: a route needs a host name"},
		{"a host that is no DNS name", func(r *Route) { r.Spec.Host = "www_example.com" }, "spec.host: \"www_example.com\" is not a DNS name"},
		{"a relative path", func(r *Route) { r.Spec.Path = "api" }, "spec.path: must start with /"},
		{"another kind of backend", func(r *Route) { r.Spec.To.Kind = "Pod" }, "spec.to.kind: must be Service"},
		{"a weight past 256", func(r *Route) { r.Spec.To.Weight = w(300) }, "spec.to.weight: must be 0-256"},
		{"four alternate backends", func(r *Route) {
			r.Spec.AlternateBackends = []RouteTargetReference{{Name: "a"}, {Name: "b"}, {Name: "c"}, {Name: "d"}}
		}, "spec.alternateBackends: at most 3"},
		{"an unknown termination", func(r *Route) { r.Spec.TLS = &TLSConfig{Termination: "mtls"} }, "spec.tls.termination: must be edge, passthrough or reencrypt"},
		{"passthrough with a certificate", func(r *Route) {
			r.Spec.TLS = &TLSConfig{Termination: TLSTerminationPassthrough, Certificate: "x"}
		}, "spec.tls: passthrough routes carry no certificates"},
		{"a key without a certificate", func(r *Route) {
			r.Spec.TLS = &TLSConfig{Termination: TLSTerminationEdge, Key: "x"}
		}, "spec.tls: give both certificate and key"},
		{"Allow on reencrypt", func(r *Route) {
			r.Spec.TLS = &TLSConfig{Termination: TLSTerminationReencrypt, DestinationCACertificate: "x", InsecureEdgeTerminationPolicy: InsecurePolicyAllow}
		}, "spec.tls.insecureEdgeTerminationPolicy: Allow is only for edge"},
		{"a destination CA that is no PEM", func(r *Route) {
			r.Spec.TLS = &TLSConfig{Termination: TLSTerminationReencrypt, DestinationCACertificate: "x"}
		}, "spec.tls.destinationCACertificate: must be PEM certificates"},
		{"edge with the router's certificate", func(r *Route) {
			r.Spec.TLS = &TLSConfig{Termination: TLSTerminationEdge, InsecureEdgeTerminationPolicy: InsecurePolicyRedirect}
		}, ""},
	} {
		t.Run(tc.row, func(t *testing.T) {
			r := base()
			tc.edit(r)
			errs := Routes.Validate(r)
			var got []string
			for _, e := range errs {
				got = append(got, e.Field+": "+e.Detail)
			}
			all := strings.Join(got, "; ")
			switch {
			case tc.want == "" && len(errs) > 0:
				t.Errorf("Validate = %s, want valid", all)
			case tc.want != "" && !strings.Contains(all, tc.want):
				t.Errorf("Validate = %q, want %q", all, tc.want)
			}
		})
	}
}
