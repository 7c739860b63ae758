package proxy

import (
	"net"
	"slices"
	"strconv"
	"strings"

	"slipway.dev/slipway/api"
)

// ServiceEnv returns the environment a pod gets for the services it can
// see (the caller picks them: the pod's project, those that existed when
// the pod started). For a service "my-db" with cluster IP 10.43.0.5 and a
// first port 5432 named "pg":
//
//	MY_DB_SERVICE_HOST=10.43.0.5          Kubernetes
//	MY_DB_SERVICE_PORT=5432               Kubernetes: the first port
//	MY_DB_SERVICE_PORT_PG=5432            Kubernetes: one per named port
//	MY_DB_HOST=10.43.0.5                  short alias
//	MY_DB_PORT=5432                       short alias: the first port
//	MY_DB_PORT_5432_TCP=tcp://10.43.0.5:5432   Docker links: one set per port
//	MY_DB_PORT_5432_TCP_PROTO=tcp
//	MY_DB_PORT_5432_TCP_PORT=5432
//	MY_DB_PORT_5432_TCP_ADDR=10.43.0.5
//
// Names are upper-cased with '-' turned into '_'. NAME_PORT is the bare
// port number, which is what an application reading NAME_HOST and
// NAME_PORT expects; Kubernetes sets it to tcp://IP:PORT instead (the
// Docker-link form), which is still there as NAME_PORT_<port>_<PROTO>.
//
// Services without a cluster IP or ports get nothing. Services are taken
// in name order and a name seen twice is used once, so the result is the
// same for the same services in any order.
func ServiceEnv(services []*api.Service) []api.EnvVar {
	sorted := slices.DeleteFunc(slices.Clone(services), func(s *api.Service) bool { return s == nil })
	slices.SortStableFunc(sorted, func(a, b *api.Service) int {
		return strings.Compare(a.Name+"\x00"+a.Namespace, b.Name+"\x00"+b.Namespace)
	})
	var env []api.EnvVar
	seen := map[string]bool{}
	add := func(name, value string) { env = append(env, api.EnvVar{Name: name, Value: value}) }
	for _, s := range sorted {
		ip := s.Spec.ClusterIP
		if ip == "" || ip == "None" || len(s.Spec.Ports) == 0 || seen[s.Name] {
			continue
		}
		seen[s.Name] = true
		name := envName(s.Name)
		first := strconv.Itoa(int(s.Spec.Ports[0].Port))
		add(name+"_SERVICE_HOST", ip)
		add(name+"_SERVICE_PORT", first)
		for _, p := range s.Spec.Ports {
			if p.Name != "" {
				add(name+"_SERVICE_PORT_"+envName(p.Name), strconv.Itoa(int(p.Port)))
			}
		}
		add(name+"_HOST", ip)
		add(name+"_PORT", first)
		for _, p := range s.Spec.Ports {
			proto := strings.ToLower(protocol(p.Protocol))
			port := strconv.Itoa(int(p.Port))
			prefix := name + "_PORT_" + port + "_" + strings.ToUpper(proto)
			add(prefix, proto+"://"+net.JoinHostPort(ip, port))
			add(prefix+"_PROTO", proto)
			add(prefix+"_PORT", port)
			add(prefix+"_ADDR", ip)
		}
	}
	return env
}

func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

// protocol defaults an empty protocol to TCP.
func protocol(p string) string {
	if p == "" {
		return "TCP"
	}
	return strings.ToUpper(p)
}
