package apiserver

import (
	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
)

// redactRoute hides a route's TLS private key from whoever may not update
// the route: the view role reads routes, and the key is a credential
// (whoever holds it can impersonate the host). Those who may update the
// route could replace the key anyway, so they see it, and so does a
// router (rbac.RouteKeysVerb, the system:router role), which terminates
// TLS with it. rt is the caller's own copy.
func (s *Server) redactRoute(u identity.Info, rt *api.Route) {
	if rt.Spec.TLS == nil || rt.Spec.TLS.Key == "" {
		return
	}
	if ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: "update", Resource: "routes", Namespace: rt.Namespace, Name: rt.Name}); ok {
		return
	}
	if ok, _ := s.authz.Authorize(u, rbac.Attributes{Verb: rbac.RouteKeysVerb, Resource: "routes", Namespace: rt.Namespace, Name: rt.Name}); ok {
		return
	}
	tls := *rt.Spec.TLS
	tls.Key = api.RedactedSecret
	rt.Spec.TLS = &tls
}
