package proxy_test

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/cluster/proxy"
)

func TestServiceEnv(t *testing.T) {
	svc := func(name, ip string, ports ...api.ServicePort) *api.Service {
		return &api.Service{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: name}, Spec: api.ServiceSpec{ClusterIP: ip, Ports: ports}}
	}
	for _, tc := range []struct {
		name     string
		services []*api.Service
		want     []api.EnvVar
	}{
		{name: "none", services: nil, want: nil},
		{
			name:     "mysql gets MYSQL_HOST and MYSQL_PORT",
			services: []*api.Service{svc("mysql", "10.43.0.5", api.ServicePort{Port: 3306})},
			want: []api.EnvVar{
				{Name: "MYSQL_SERVICE_HOST", Value: "10.43.0.5"},
				{Name: "MYSQL_SERVICE_PORT", Value: "3306"},
				{Name: "MYSQL_HOST", Value: "10.43.0.5"},
				{Name: "MYSQL_PORT", Value: "3306"},
				{Name: "MYSQL_PORT_3306_TCP", Value: "tcp://10.43.0.5:3306"},
				{Name: "MYSQL_PORT_3306_TCP_PROTO", Value: "tcp"},
				{Name: "MYSQL_PORT_3306_TCP_PORT", Value: "3306"},
				{Name: "MYSQL_PORT_3306_TCP_ADDR", Value: "10.43.0.5"},
			},
		},
		{
			name: "dashes, named ports, UDP, first port is the port",
			services: []*api.Service{svc("my-dns", "10.43.0.9",
				api.ServicePort{Name: "dns-udp", Port: 53, Protocol: "UDP"},
				api.ServicePort{Name: "dns-tcp", Port: 53, Protocol: "TCP"},
				api.ServicePort{Port: 9153})},
			want: []api.EnvVar{
				{Name: "MY_DNS_SERVICE_HOST", Value: "10.43.0.9"},
				{Name: "MY_DNS_SERVICE_PORT", Value: "53"},
				{Name: "MY_DNS_SERVICE_PORT_DNS_UDP", Value: "53"},
				{Name: "MY_DNS_SERVICE_PORT_DNS_TCP", Value: "53"},
				{Name: "MY_DNS_HOST", Value: "10.43.0.9"},
				{Name: "MY_DNS_PORT", Value: "53"},
				{Name: "MY_DNS_PORT_53_UDP", Value: "udp://10.43.0.9:53"},
				{Name: "MY_DNS_PORT_53_UDP_PROTO", Value: "udp"},
				{Name: "MY_DNS_PORT_53_UDP_PORT", Value: "53"},
				{Name: "MY_DNS_PORT_53_UDP_ADDR", Value: "10.43.0.9"},
				{Name: "MY_DNS_PORT_53_TCP", Value: "tcp://10.43.0.9:53"},
				{Name: "MY_DNS_PORT_53_TCP_PROTO", Value: "tcp"},
				{Name: "MY_DNS_PORT_53_TCP_PORT", Value: "53"},
				{Name: "MY_DNS_PORT_53_TCP_ADDR", Value: "10.43.0.9"},
				{Name: "MY_DNS_PORT_9153_TCP", Value: "tcp://10.43.0.9:9153"},
				{Name: "MY_DNS_PORT_9153_TCP_PROTO", Value: "tcp"},
				{Name: "MY_DNS_PORT_9153_TCP_PORT", Value: "9153"},
				{Name: "MY_DNS_PORT_9153_TCP_ADDR", Value: "10.43.0.9"},
			},
		},
		{
			name: "no cluster IP, headless, no ports and nil are skipped",
			services: []*api.Service{
				svc("pending", "", api.ServicePort{Port: 80}),
				svc("headless", "None", api.ServicePort{Port: 80}),
				svc("portless", "10.43.0.3"),
				nil,
			},
			want: nil,
		},
		{
			name:     "IPv6 addresses are bracketed in URLs",
			services: []*api.Service{svc("v6", "fd00::5", api.ServicePort{Port: 80})},
			want: []api.EnvVar{
				{Name: "V6_SERVICE_HOST", Value: "fd00::5"},
				{Name: "V6_SERVICE_PORT", Value: "80"},
				{Name: "V6_HOST", Value: "fd00::5"},
				{Name: "V6_PORT", Value: "80"},
				{Name: "V6_PORT_80_TCP", Value: "tcp://[fd00::5]:80"},
				{Name: "V6_PORT_80_TCP_PROTO", Value: "tcp"},
				{Name: "V6_PORT_80_TCP_PORT", Value: "80"},
				{Name: "V6_PORT_80_TCP_ADDR", Value: "fd00::5"},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, proxy.ServiceEnv(tc.services)); diff != "" {
				t.Errorf("ServiceEnv (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServiceEnvIsOrderIndependent(t *testing.T) {
	a := &api.Service{ObjectMeta: api.ObjectMeta{Name: "a"}, Spec: api.ServiceSpec{ClusterIP: "10.43.0.1", Ports: []api.ServicePort{{Port: 1}}}}
	b := &api.Service{ObjectMeta: api.ObjectMeta{Name: "b"}, Spec: api.ServiceSpec{ClusterIP: "10.43.0.2", Ports: []api.ServicePort{{Port: 2}}}}
	if diff := cmp.Diff(proxy.ServiceEnv([]*api.Service{a, b}), proxy.ServiceEnv([]*api.Service{b, a})); diff != "" {
		t.Errorf("ServiceEnv depends on input order (-[a b] +[b a]):\n%s", diff)
	}
}

func ExampleServiceEnv() {
	mysql := &api.Service{
		ObjectMeta: api.ObjectMeta{Namespace: "shop", Name: "mysql"},
		Spec:       api.ServiceSpec{ClusterIP: "10.43.0.12", Ports: []api.ServicePort{{Name: "sql", Port: 3306}}},
	}
	for _, e := range proxy.ServiceEnv([]*api.Service{mysql}) {
		fmt.Printf("%s=%s\n", e.Name, e.Value)
	}
	// Output:
	// MYSQL_SERVICE_HOST=10.43.0.12
	// MYSQL_SERVICE_PORT=3306
	// MYSQL_SERVICE_PORT_SQL=3306
	// MYSQL_HOST=10.43.0.12
	// MYSQL_PORT=3306
	// MYSQL_PORT_3306_TCP=tcp://10.43.0.12:3306
	// MYSQL_PORT_3306_TCP_PROTO=tcp
	// MYSQL_PORT_3306_TCP_PORT=3306
	// MYSQL_PORT_3306_TCP_ADDR=10.43.0.12
}

func ExampleAllocator() {
	a, err := proxy.NewAllocator(proxy.DefaultServiceCIDR)
	if err != nil {
		panic(err)
	}
	ip, err := a.AllocateClusterIP([]string{"10.43.0.1", "10.43.0.3"})
	fmt.Println(ip, err)
	// Output: 10.43.0.2 <nil>
}
