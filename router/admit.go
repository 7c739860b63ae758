package router

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"slipway.dev/slipway/api"
)

// Verdict is a router's decision on one route.
type Verdict struct {
	Admitted bool
	Reason   string // HostAlreadyClaimed when not admitted
	Message  string
}

// Admit decides which routes a router serves. The oldest route for a host
// (by creation time, then project/name) claims the host for its project:
// other routes of that project may share the host on other paths, routes
// of other projects are rejected with a message naming the owner. Within
// a project, a second route for the same host and path is rejected the
// same way. Hosts compare case-insensitively. The result is keyed by
// "project/name" and covers every route given; it depends only on the
// routes, so every router replica decides alike.
func Admit(routes []*api.Route) map[string]Verdict {
	sorted := append([]*api.Route(nil), routes...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if ta, tb := created(a), created(b); !ta.Equal(tb) {
			return ta.Before(tb)
		}
		return routeKey(a) < routeKey(b)
	})
	owner := map[string]*api.Route{} // host → oldest route
	paths := map[string]*api.Route{} // host + path → the route serving it
	out := make(map[string]Verdict, len(sorted))
	for _, r := range sorted {
		host := strings.ToLower(r.Spec.Host)
		o, claimed := owner[host]
		if !claimed {
			owner[host], o = r, r
		}
		if o.Namespace != r.Namespace {
			out[routeKey(r)] = Verdict{Reason: api.ReasonHostAlreadyClaimed,
				Message: fmt.Sprintf("host %s is claimed by %s since %s", host, routeKey(o), created(o).UTC().Format(time.RFC3339))}
			continue
		}
		hp := host + r.Spec.Path
		if p, dup := paths[hp]; dup {
			out[routeKey(r)] = Verdict{Reason: api.ReasonHostAlreadyClaimed,
				Message: fmt.Sprintf("host %s path %q is served by route %s since %s", host, r.Spec.Path, routeKey(p), created(p).UTC().Format(time.RFC3339))}
			continue
		}
		paths[hp] = r
		out[routeKey(r)] = Verdict{Admitted: true}
	}
	return out
}

func created(r *api.Route) time.Time {
	if r.CreationTimestamp == nil {
		return time.Time{}
	}
	return *r.CreationTimestamp
}

func routeKey(r *api.Route) string { return r.Namespace + "/" + r.Name }

// ingress is the status entry this router wants on r for v; changed says
// whether it differs from what r has (ignoring transition times).
func ingress(r *api.Route, routerName string, v Verdict, now time.Time) (api.RouteIngress, bool) {
	c := api.RouteCondition{Type: api.RouteAdmitted, Status: "True", LastTransitionTime: now}
	if !v.Admitted {
		c.Status, c.Reason, c.Message = "False", v.Reason, v.Message
	}
	want := api.RouteIngress{Host: r.Spec.Host, RouterName: routerName, Conditions: []api.RouteCondition{c}}
	for _, in := range r.Status.Ingress {
		if in.RouterName != routerName {
			continue
		}
		if in.Host == want.Host && len(in.Conditions) == 1 {
			h := in.Conditions[0]
			if h.Type == c.Type && h.Status == c.Status && h.Reason == c.Reason && h.Message == c.Message {
				return in, false
			}
			if h.Status == c.Status {
				want.Conditions[0].LastTransitionTime = h.LastTransitionTime
			}
		}
		return want, true
	}
	return want, true
}
