package cmd

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
)

// routeFlags are what expose and create route share.
type routeFlags struct {
	hostname, path, port, insecurePolicy string
	service                              string
	cert, key, caCert, destCACert        string
}

func (f *routeFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.hostname, "hostname", "", "host name clients use, such as www.example.com (required: there is no default router domain yet)")
	c.Flags().StringVar(&f.path, "path", "", "serve only requests whose path starts with this, such as /api")
	c.Flags().StringVar(&f.port, "port", "", "service port to route to, by name or number (default: the service's first port)")
}

func (f *routeFlags) route(ns, name string) (*api.Route, error) {
	if f.hostname == "" {
		return nil, usagef("give --hostname: the DNS name clients use for this route")
	}
	r := &api.Route{
		ObjectMeta: api.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{}},
		Spec:       api.RouteSpec{Host: f.hostname, Path: f.path, To: api.RouteTargetReference{Kind: "Service", Name: f.service}},
	}
	if f.port != "" {
		r.Spec.Port = &api.RoutePort{TargetPort: f.port}
	}
	return r, nil
}

// createRoute creates r and reports whether the router admitted it,
// waiting a few seconds for its verdict.
func createRoute(ctx context.Context, out io.Writer, cl *client.Client, r *api.Route, verb string) error {
	if err := cl.Create(ctx, api.Routes, r); err != nil {
		return err
	}
	fmt.Fprintf(out, "route/%s %s\n", r.Name, verb)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		o, err := cl.Get(ctx, api.Routes, r.Namespace, r.Name)
		if err != nil {
			return nil
		}
		for _, in := range o.(*api.Route).Status.Ingress {
			for _, c := range in.Conditions {
				if c.Type != api.RouteAdmitted {
					continue
				}
				if c.Status == "False" {
					fmt.Fprintf(out, "warning: router %s did not admit the route: %s: %s\n", in.RouterName, c.Reason, c.Message)
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprintln(out, "warning: no router has admitted the route yet; see `slipway get route "+r.Name+" -o yaml`")
	return nil
}

func exposeCmd() *cobra.Command {
	var f routeFlags
	var name string
	c := &cobra.Command{
		Use:   "expose svc/NAME --hostname HOST",
		Short: "Expose a service outside the cluster with a route",
		Long: `Create a plain HTTP route to a service: the edge router sends requests for
HOST (and --path) to the service's ready pods. For TLS, use
'slipway create route edge|passthrough|reencrypt'.

The oldest route for a host owns it: a route for a host that another
project's route already serves is not admitted, and says which route owns it.`,
		Example: `  slipway expose svc/web --hostname www.example.com
  slipway expose svc/api --hostname www.example.com --path /api --name web-api`,
		Args: exactArgs(1, "svc/NAME"),
		RunE: func(c *cobra.Command, args []string) error {
			kind, svc, ok := strings.Cut(args[0], "/")
			if !ok {
				kind, svc = "svc", args[0]
			}
			if r, found := api.Lookup(kind); !found || r != api.Services {
				return usagef("expose works on services (svc/NAME), not %q", kind)
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			if _, err := cl.Get(c.Context(), api.Services, ns, svc); err != nil {
				return err
			}
			f.service = svc
			r, err := f.route(ns, cmpOr(name, svc))
			if err != nil {
				return err
			}
			r.Labels["app"] = svc
			return createRoute(c.Context(), c.OutOrStdout(), cl, r, "exposed")
		},
	}
	f.add(c)
	c.Flags().StringVar(&name, "name", "", "the route's name (default: the service's)")
	return c
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func createRouteCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "route edge|passthrough|reencrypt NAME --service SVC --hostname HOST",
		Short: "Create a TLS route: edge, passthrough or reencrypt",
		Long: `Create a route served over HTTPS by the edge router.

  edge         the router terminates TLS with --cert/--key (default: its own
               certificate) and sends plain HTTP to the pods.
  passthrough  the router reads only the name the client asks for (SNI) and
               passes the TLS connection to a pod unchanged: the pod serves
               its own certificate.
  reencrypt    the router terminates TLS, then opens TLS to the pod and
               checks the pod's certificate against --dest-ca-cert, for the
               name SERVICE.PROJECT.svc.

The private key is shown only to those who may update the route.`,
		Example: `  slipway create route edge web --service web --hostname www.example.com --cert tls.crt --key tls.key
  slipway create route passthrough db --service db --hostname db.example.com
  slipway create route reencrypt api --service api --hostname api.example.com --dest-ca-cert pod-ca.crt`,
	}
	for _, term := range []string{api.TLSTerminationEdge, api.TLSTerminationPassthrough, api.TLSTerminationReencrypt} {
		c.AddCommand(createTLSRouteCmd(term))
	}
	return c
}

func createTLSRouteCmd(term string) *cobra.Command {
	var f routeFlags
	c := &cobra.Command{
		Use:   term + " NAME --service SVC --hostname HOST",
		Short: "Create a TLS route (" + term + ")",
		Example: map[string]string{
			api.TLSTerminationEdge:        "  slipway create route edge web --service web --hostname www.example.com --cert tls.crt --key tls.key --insecure-policy Redirect",
			api.TLSTerminationPassthrough: "  slipway create route passthrough db --service db --hostname db.example.com",
			api.TLSTerminationReencrypt:   "  slipway create route reencrypt api --service api --hostname api.example.com --dest-ca-cert pod-ca.crt",
		}[term],
		Args: exactArgs(1, "a route name"),
		RunE: func(c *cobra.Command, args []string) error {
			if f.service == "" {
				return usagef("give --service: the service the route sends traffic to")
			}
			files := map[string]*string{}
			switch term {
			case api.TLSTerminationPassthrough:
				if f.cert != "" || f.key != "" || f.caCert != "" || f.destCACert != "" {
					return usagef("a passthrough route carries no certificates: the pod serves its own")
				}
				if f.path != "" {
					return usagef("a passthrough route cannot have --path: the router does not see inside the TLS connection")
				}
			case api.TLSTerminationEdge:
				if f.destCACert != "" {
					return usagef("--dest-ca-cert is for reencrypt routes")
				}
			case api.TLSTerminationReencrypt:
				if f.destCACert == "" {
					return usagef("give --dest-ca-cert: the CA that signed the pods' certificates, which the router checks")
				}
			}
			tls := &api.TLSConfig{Termination: term, InsecureEdgeTerminationPolicy: f.insecurePolicy}
			files["--cert"], files["--key"], files["--ca-cert"], files["--dest-ca-cert"] = &tls.Certificate, &tls.Key, &tls.CACertificate, &tls.DestinationCACertificate
			paths := map[string]string{"--cert": f.cert, "--key": f.key, "--ca-cert": f.caCert, "--dest-ca-cert": f.destCACert}
			for flag, p := range paths {
				if p == "" {
					continue
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return usagef("%s: %v", flag, err)
				}
				*files[flag] = string(b)
			}
			cl, ns, err := connectProject()
			if err != nil {
				return err
			}
			r, err := f.route(ns, args[0])
			if err != nil {
				return err
			}
			r.Spec.TLS = tls
			return createRoute(c.Context(), c.OutOrStdout(), cl, r, "created")
		},
	}
	f.add(c)
	c.Flags().StringVar(&f.service, "service", "", "the service the route sends traffic to (required)")
	if term != api.TLSTerminationPassthrough {
		c.Flags().StringVar(&f.cert, "cert", "", "PEM file of the certificate to serve (default: the router's own)")
		c.Flags().StringVar(&f.key, "key", "", "PEM file of the certificate's private key")
		c.Flags().StringVar(&f.caCert, "ca-cert", "", "PEM file of intermediate certificates served with --cert")
	}
	if term == api.TLSTerminationReencrypt {
		c.Flags().StringVar(&f.destCACert, "dest-ca-cert", "", "PEM file of the CA the pods' certificates chain to (required)")
	}
	c.Flags().StringVar(&f.insecurePolicy, "insecure-policy", "", "what plain HTTP gets: None (default, not served), Redirect (to https), or Allow (edge only)")
	return c
}
