package api

import (
	"strings"
	"testing"
)

func TestEndpointsValidation(t *testing.T) {
	ep := func(ip string, port int32, proto string) *Endpoints {
		return &Endpoints{ObjectMeta: ObjectMeta{Name: "db", Namespace: "p"}, Subsets: []EndpointSubset{{
			Addresses: []EndpointAddress{{IP: ip}}, Ports: []ServicePort{{Port: port, Protocol: proto}},
		}}}
	}
	for _, tc := range []struct {
		ep   *Endpoints
		want string // "" is valid
	}{
		{ep("10.0.0.5", 5432, ""), ""},
		{ep("fd00::5", 5432, "UDP"), ""},
		{ep("db.example.com", 5432, ""), "subsets[0].addresses[0].ip"},
		{ep("10.0.0.5", 0, ""), "subsets[0].ports[0]"},
		{ep("10.0.0.5", 80, "SCTP"), "subsets[0].ports[0].protocol"},
	} {
		err := EndpointsResource.ValidateObject(tc.ep)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Validate(%+v) = %v, want valid", tc.ep.Subsets, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("Validate(%+v) = %v, want an error about %s", tc.ep.Subsets, err, tc.want)
		}
	}
}
