package api

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Route exposes a Service to clients outside the cluster under a host
// name (and optionally a path), through the edge router, in the shape of
// OpenShift's route.openshift.io/v1.
type Route struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       RouteSpec   `json:"spec"`
	Status     RouteStatus `json:"status,omitempty"`
}

// RouteSpec is what the project's users set.
type RouteSpec struct {
	// Host is the DNS name clients use. Required: Slipway has no default
	// router domain yet.
	Host string `json:"host"`
	// Path, if set, routes only requests whose path starts with it (the
	// longest matching path wins). Not allowed with passthrough TLS,
	// where the router never sees the path.
	Path string `json:"path,omitempty"`
	// To is the Service traffic goes to.
	To RouteTargetReference `json:"to"`
	// AlternateBackends share traffic with To by weight (canaries): up
	// to 3 more Services.
	AlternateBackends []RouteTargetReference `json:"alternateBackends,omitempty"`
	// Port selects the service port, by name or number; default the
	// service's first port.
	Port *RoutePort `json:"port,omitempty"`
	// TLS, if set, serves the route over HTTPS.
	TLS *TLSConfig `json:"tls,omitempty"`
}

// RouteTargetReference is a backend Service and its weight.
type RouteTargetReference struct {
	Kind string `json:"kind,omitempty"` // Service (the default and only kind)
	Name string `json:"name"`
	// Weight is this backend's share against the route's other backends,
	// 0-256. Default 100 (when nil); 0 sends it no traffic.
	Weight *int32 `json:"weight,omitempty"`
}

// RoutePort is the service port a route targets: a port name or number.
type RoutePort struct {
	TargetPort string `json:"targetPort"`
}

// TLS terminations.
const (
	TLSTerminationEdge        = "edge"
	TLSTerminationPassthrough = "passthrough"
	TLSTerminationReencrypt   = "reencrypt"
)

// Insecure edge termination policies: what plain HTTP gets on a TLS route.
const (
	InsecurePolicyNone     = "None"     // refused (404, no route), the default
	InsecurePolicyAllow    = "Allow"    // served over HTTP too
	InsecurePolicyRedirect = "Redirect" // redirected to https
)

// TLSConfig is how the router handles TLS for a route. The key is a
// secret: the API shows it only to whoever may update the route (see the
// API server's redaction); the view role sees RedactedSecret.
type TLSConfig struct {
	// Termination is edge (the router terminates TLS, plain HTTP to the
	// pods), passthrough (the router splices the TLS connection to a pod,
	// chosen by SNI) or reencrypt (the router terminates, then opens TLS
	// to the pod, verifying it with DestinationCACertificate).
	Termination string `json:"termination"`
	// Certificate and Key are PEM, served for Host on edge and reencrypt.
	// Without them the router serves its own default certificate.
	Certificate string `json:"certificate,omitempty"`
	Key         string `json:"key,omitempty"`
	// CACertificate is PEM appended to the certificate's chain.
	CACertificate string `json:"caCertificate,omitempty"`
	// DestinationCACertificate is PEM that the pods' certificates must
	// chain to, on reencrypt. Required for reencrypt.
	DestinationCACertificate string `json:"destinationCACertificate,omitempty"`
	// InsecureEdgeTerminationPolicy is None (default), Allow or Redirect.
	InsecureEdgeTerminationPolicy string `json:"insecureEdgeTerminationPolicy,omitempty"`
}

// RouteStatus says which routers admitted the route.
type RouteStatus struct {
	Ingress []RouteIngress `json:"ingress,omitempty"`
}

// RouteIngress is one router's view of the route.
type RouteIngress struct {
	Host       string           `json:"host,omitempty"`
	RouterName string           `json:"routerName"`
	Conditions []RouteCondition `json:"conditions,omitempty"`
}

// RouteCondition is Admitted True, or False with a reason such as
// HostAlreadyClaimed.
type RouteCondition struct {
	Type               string    `json:"type"` // Admitted
	Status             string    `json:"status"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime,omitempty"`
}

// Route condition types and reasons.
const (
	RouteAdmitted            = "Admitted"
	ReasonHostAlreadyClaimed = "HostAlreadyClaimed"
)

// RouteWeight is a backend's weight with its default.
func RouteWeight(b RouteTargetReference) int32 {
	if b.Weight == nil {
		return 100
	}
	return *b.Weight
}

// Routes is the resource.
var Routes = Register(&Resource{
	Name: "routes", Kind: "Route", Namespaced: true, HasStatus: true,
	New:      func() Object { return &Route{} },
	Validate: func(o Object) FieldErrors { return validateRoute(o.(*Route)) },
	Columns: []Column{
		{Header: "HOST", Path: "spec.host"},
		{Header: "PATH", Path: "spec.path"},
		{Header: "SERVICE", Path: "spec.to.name"},
		{Header: "TERMINATION", Path: "spec.tls.termination"},
		{Header: "ADMITTED", Path: "status.ingress[routerName=default].conditions[type=Admitted].status"},
		{Header: "REASON", Path: "status.ingress[routerName=default].conditions[type=Admitted].reason", Wide: true},
	},
})

func validateRoute(r *Route) FieldErrors {
	var errs FieldErrors
	s := &r.Spec
	if s.Host == "" {
		errs.Add("spec.host", FieldValueRequired, "a route needs a host name, such as www.example.com")
	} else if msgs := validation.IsDNS1123Subdomain(s.Host); len(msgs) > 0 {
		errs.Add("spec.host", FieldValueInvalid, "%q is not a DNS name: %s", s.Host, msgs[0])
	}
	if s.Path != "" && !strings.HasPrefix(s.Path, "/") {
		errs.Add("spec.path", FieldValueInvalid, "must start with /")
	}
	backend := func(field string, b RouteTargetReference) {
		if b.Kind != "" && b.Kind != "Service" {
			errs.Add(field+".kind", FieldValueInvalid, "must be Service, not %q", b.Kind)
		}
		if msgs := validation.IsDNS1123Label(b.Name); len(msgs) > 0 {
			errs.Add(field+".name", FieldValueInvalid, "must name a service: %s", msgs[0])
		}
		if w := RouteWeight(b); w < 0 || w > 256 {
			errs.Add(field+".weight", FieldValueInvalid, "must be 0-256")
		}
	}
	backend("spec.to", s.To)
	if len(s.AlternateBackends) > 3 {
		errs.Add("spec.alternateBackends", FieldValueInvalid, "at most 3 alternate backends")
	}
	for i, b := range s.AlternateBackends {
		backend(fieldIndex("spec.alternateBackends", i, ""), b)
	}
	if s.Port != nil && s.Port.TargetPort == "" {
		errs.Add("spec.port.targetPort", FieldValueRequired, "name or number a service port, or leave port out")
	}
	if t := s.TLS; t != nil {
		switch t.Termination {
		case TLSTerminationEdge, TLSTerminationReencrypt:
		case TLSTerminationPassthrough:
			if s.Path != "" {
				errs.Add("spec.path", FieldValueInvalid, "passthrough routes cannot have a path: the router does not see inside the TLS connection")
			}
			if t.Certificate != "" || t.Key != "" || t.CACertificate != "" || t.DestinationCACertificate != "" {
				errs.Add("spec.tls", FieldValueInvalid, "passthrough routes carry no certificates: the pod serves its own")
			}
		default:
			errs.Add("spec.tls.termination", FieldValueInvalid, "must be edge, passthrough or reencrypt, not %q", t.Termination)
		}
		switch t.InsecureEdgeTerminationPolicy {
		case "", InsecurePolicyNone, InsecurePolicyAllow, InsecurePolicyRedirect:
		default:
			errs.Add("spec.tls.insecureEdgeTerminationPolicy", FieldValueInvalid, "must be None, Allow or Redirect")
		}
		if t.InsecureEdgeTerminationPolicy == InsecurePolicyAllow && t.Termination != TLSTerminationEdge {
			errs.Add("spec.tls.insecureEdgeTerminationPolicy", FieldValueInvalid, "Allow is only for edge termination")
		}
		if (t.Certificate == "") != (t.Key == "") {
			errs.Add("spec.tls", FieldValueInvalid, "give both certificate and key, or neither (the router's default certificate)")
		} else if t.Certificate != "" {
			if _, err := tls.X509KeyPair([]byte(t.Certificate+"\n"+t.CACertificate), []byte(t.Key)); err != nil {
				errs.Add("spec.tls.certificate", FieldValueInvalid, "certificate and key do not make a pair: %v", err)
			}
		}
		for field, p := range map[string]string{"spec.tls.caCertificate": t.CACertificate, "spec.tls.destinationCACertificate": t.DestinationCACertificate} {
			if p != "" && !validCertPEM(p) {
				errs.Add(field, FieldValueInvalid, "must be PEM certificates")
			}
		}
		if t.Termination == TLSTerminationReencrypt && t.DestinationCACertificate == "" {
			errs.Add("spec.tls.destinationCACertificate", FieldValueRequired, "reencrypt verifies the pod's certificate: give the CA that signed it")
		}
	}
	return errs
}

func validCertPEM(s string) bool {
	rest, n := []byte(s), 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return n > 0 && strings.TrimSpace(string(rest)) == ""
		}
		if b.Type != "CERTIFICATE" {
			return false
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return false
		}
		n++
	}
}
