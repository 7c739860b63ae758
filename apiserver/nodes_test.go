package apiserver_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/server/servertest"
	"slipway.dev/slipway/store"
)

// joinNode joins node name with a fresh bootstrap token and returns a
// client that acts as it, with its certificate.
func joinNode(t *testing.T, env *servertest.Env, name string) *client.Client {
	t.Helper()
	ctx := context.Background()
	tr, err := env.Admin.CreateBootstrapToken(ctx, name, time.Minute)
	if err != nil {
		t.Fatalf("bootstrap token: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "system:node:" + name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := env.Client(t, tr.Status.Token).JoinNode(ctx, name, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatalf("join %s: %v", name, err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("join %s answered no certificate: %q", name, certPEM)
	}
	c, err := client.New(env.URL, client.WithCAData(env.CA), client.WithClientCertificate(tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The node agent's code runs on client.Store as on the store: an informer
// over the API as node n1 holds n1's pods only, follows a pod bound to
// n1 after it started, and status writes and errors mean what the
// store's mean.
func TestNodeClientStore(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	if err := env.Admin.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: "shop"}}); err != nil {
		t.Fatal(err)
	}
	pod := func(name, node string) *api.Pod {
		return &api.Pod{ObjectMeta: api.ObjectMeta{Name: name, Namespace: "shop"},
			Spec: api.PodSpec{NodeName: node, Containers: []api.Container{{Name: "app", Image: "busybox"}}}}
	}
	for _, p := range []*api.Pod{pod("mine", "n1"), pod("theirs", "n2")} {
		if err := env.Admin.Create(ctx, api.Pods, p); err != nil {
			t.Fatal(err)
		}
	}
	n1 := joinNode(t, env, "n1")
	st := &client.Store{C: n1, Fields: map[*api.Resource]string{api.Pods: "spec.nodeName=n1"}}
	var _ store.Interface = st

	inf := store.NewInformer(st, api.Pods)
	go inf.Run(ctx)
	if err := inf.WaitFor(ctx, 0); err != nil {
		t.Fatal(err)
	}
	cached := func() []string {
		var out []string
		for _, o := range inf.List("") {
			out = append(out, o.GetObjectMeta().Name)
		}
		return out
	}
	if got := cached(); len(got) != 1 || got[0] != "mine" {
		t.Fatalf("n1's informer holds %v, want [mine]", got)
	}
	// Bound later: the watch brings it.
	if err := env.Admin.Create(ctx, api.Pods, pod("later", "n1")); err != nil {
		t.Fatal(err)
	}
	o, err := env.Admin.Get(ctx, api.Pods, "shop", "later")
	if err != nil {
		t.Fatal(err)
	}
	rv, _ := store.ParseResourceVersion(o.GetObjectMeta().ResourceVersion)
	if err := inf.WaitFor(ctx, rv); err != nil {
		t.Fatalf("n1's informer never saw pod later: %v (holds %v)", err, cached())
	}
	if _, ok := inf.Get("shop", "later"); !ok {
		t.Fatalf("n1's informer holds %v, want later too", cached())
	}
	// Another node's pod changes; the informer never holds it.
	if _, err := env.Admin.Patch(ctx, api.Pods, "shop", "theirs", []byte(`{"metadata":{"labels":{"x":"y"}}}`)); err != nil {
		t.Fatal(err)
	}
	if _, ok := inf.Get("shop", "theirs"); ok {
		t.Fatalf("n1's informer holds n2's pod")
	}

	// Status through GuaranteedUpdate, as the agent writes it.
	out, err := st.GuaranteedUpdate(ctx, api.Pods, "shop", "mine", store.UpdateOptions{Status: true}, func(o api.Object) error {
		o.(*api.Pod).Status.Phase = api.PodRunning
		return nil
	})
	if err != nil || out.(*api.Pod).Status.Phase != api.PodRunning {
		t.Fatalf("status of its own pod through client.Store: %v", err)
	}
	if _, err := st.GuaranteedUpdate(ctx, api.Pods, "shop", "theirs", store.UpdateOptions{Status: true}, func(api.Object) error { return nil }); !isCode(err, http.StatusForbidden) {
		t.Errorf("status of n2's pod as n1: %v, want 403", err)
	}
	if _, err := st.Get(ctx, api.Nodes, "", "n1"); err != nil {
		t.Errorf("n1 reads its own Node: %v", err)
	}
	if err := st.Create(ctx, api.Nodes, &api.Node{ObjectMeta: api.ObjectMeta{Name: "n1"}}); !isCode(err, http.StatusForbidden) {
		t.Errorf("n1 creates a Node: %v, want 403", err)
	}
	// A cordoned node cannot uncordon itself.
	if _, err := env.Admin.Patch(ctx, api.Nodes, "", "n1", []byte(`{"spec":{"unschedulable":true}}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.GuaranteedUpdate(ctx, api.Nodes, "", "n1", store.UpdateOptions{}, func(o api.Object) error {
		o.(*api.Node).Spec.Unschedulable = false
		return nil
	}); err != nil {
		t.Fatalf("n1 updates its own Node: %v", err)
	}
	if o, err := env.Admin.Get(ctx, api.Nodes, "", "n1"); err != nil || !o.(*api.Node).Spec.Unschedulable {
		t.Errorf("node n1 after it wrote spec.unschedulable=false over the admin's cordon: %+v, %v; want it still cordoned", o, err)
	}
	// Events: about its own pods only (the agent's "image assumes root"
	// warning), not about another node's pod, a pod named in another
	// project, or anything else.
	event := func(name, kind, ns, obj string) *api.Event {
		return &api.Event{ObjectMeta: api.ObjectMeta{Name: name, Namespace: "shop"}, Reason: "ImageAssumesRoot", Type: "Warning",
			InvolvedObject: api.ObjectReference{Kind: kind, Namespace: ns, Name: obj}, Message: "m"}
	}
	if err := st.Create(ctx, api.Events, event("e1", "Pod", "shop", "mine")); err != nil {
		t.Errorf("n1 records an event about its own pod: %v", err)
	}
	for _, ev := range []*api.Event{event("e2", "Pod", "shop", "theirs"), event("e3", "Pod", "other", "mine"), event("e4", "Pod", "shop", "nosuch"), event("e5", "BuildConfig", "shop", "web")} {
		if err := st.Create(ctx, api.Events, ev); !isCode(err, http.StatusForbidden) {
			t.Errorf("n1 records an event about %s %s/%s: %v, want 403", ev.InvolvedObject.Kind, ev.InvolvedObject.Namespace, ev.InvolvedObject.Name, err)
		}
	}
	if _, err := st.Get(ctx, api.Events, "shop", "e1"); !isCode(err, http.StatusForbidden) {
		t.Errorf("n1 reads an event: %v, want 403", err)
	}
	// Errors carry the store's sentinels.
	if _, err := st.Get(ctx, api.Projects, "", "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get a missing project through client.Store = %v, want store.ErrNotFound", err)
	}
}

// A bad bootstrap request changes nothing: no Node, and the token is
// still good for its node.
func TestNodeJoinRefusals(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	tr, err := env.Admin.CreateBootstrapToken(ctx, "n3", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	bt := env.Client(t, tr.Status.Token)
	for _, tc := range []struct {
		name, node string
		csr        []byte
		code       int
	}{
		{"not a CSR", "n3", []byte("hello"), http.StatusBadRequest},
		{"another node's name in the CSR", "n3", csr(t, "system:node:n4"), http.StatusBadRequest},
		{"a user's name in the CSR", "n3", csr(t, "admin"), http.StatusBadRequest},
		{"the token for another node", "n4", csr(t, "system:node:n4"), http.StatusUnauthorized},
	} {
		if _, _, err := bt.JoinNode(ctx, tc.node, tc.csr); !isCode(err, tc.code) {
			t.Errorf("%s: %v, want %d", tc.name, err, tc.code)
		}
	}
	if _, err := env.Admin.Get(ctx, api.Nodes, "", "n4"); !isCode(err, http.StatusNotFound) {
		t.Errorf("node n4 after refused joins: %v, want 404", err)
	}
	if _, _, err := bt.JoinNode(ctx, "n3", csr(t, "system:node:n3")); err != nil {
		t.Errorf("the token still joins its node after refused requests: %v", err)
	}
	if _, err := env.Admin.CreateBootstrapToken(ctx, "n5", 48*time.Hour); !isCode(err, http.StatusBadRequest) {
		t.Errorf("a bootstrap token for two days: %v, want 400", err)
	}
	if _, err := env.User(t, servertest.Users[0]).CreateBootstrapToken(ctx, "n5", time.Minute); !isCode(err, http.StatusForbidden) {
		t.Errorf("a bootstrap token minted by %s: %v, want 403", servertest.Users[0], err)
	}
}

func csr(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func isCode(err error, code int) bool {
	st, ok := api.StatusFor(err)
	return ok && st.Code == code
}

// TestNodeRestrictedLabels: labels under api.NodeRestrictionLabelPrefix
// steer workloads (a nodeSelector of node-restriction.slipway.dev/tier:
// secure puts pods on the nodes an admin trusts), so, as Kubernetes'
// NodeRestriction does for node-restriction.kubernetes.io/, a node's
// credential may not add, change or remove them on its own Node, by update
// or patch, and a refused write changes nothing. Its other labels it
// writes (the agent's --node-labels); the cluster admin writes the
// protected ones.
func TestNodeRestrictedLabels(t *testing.T) {
	env := servertest.Start(t, anyRegistryPort)
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	defer cancel()
	n1 := joinNode(t, env, "n1")
	const secure = "node-restriction.slipway.dev/tier"
	labels := func() map[string]string {
		t.Helper()
		o, err := env.Admin.Get(ctx, api.Nodes, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		return o.GetObjectMeta().Labels
	}
	update := func(fn func(l map[string]string)) error {
		o, err := n1.Get(ctx, api.Nodes, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		n := o.(*api.Node)
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		fn(n.Labels)
		return n1.Update(ctx, api.Nodes, n)
	}

	// Its own labels it may write.
	if err := update(func(l map[string]string) { l["zone"] = "a" }); err != nil {
		t.Fatalf("n1 sets its label zone=a: %v", err)
	}
	for _, c := range []struct {
		what  string
		write func() error
	}{
		{"adds " + secure + " by update", func() error { return update(func(l map[string]string) { l[secure] = "secure" }) }},
		{"adds " + secure + " by patch", func() error {
			_, err := n1.Patch(ctx, api.Nodes, "", "n1", []byte(`{"metadata":{"labels":{"`+secure+`":"secure"}}}`))
			return err
		}},
	} {
		err := c.write()
		if !isCode(err, http.StatusForbidden) || !strings.Contains(err.Error(), api.NodeRestrictionLabelPrefix) {
			t.Errorf("n1 %s: %v, want 403 naming the protected prefix", c.what, err)
		}
		if l := labels(); l[secure] != "" || l["zone"] != "a" {
			t.Errorf("n1's labels after it %s: %v, want zone=a only", c.what, l)
		}
	}

	// The admin sets it; the node may neither change nor remove it, and
	// its other writes keep it.
	if _, err := env.Admin.Patch(ctx, api.Nodes, "", "n1", []byte(`{"metadata":{"labels":{"`+secure+`":"secure"}}}`)); err != nil {
		t.Fatalf("the admin labels n1 %s=secure: %v", secure, err)
	}
	for _, c := range []struct {
		what string
		fn   func(l map[string]string)
	}{
		{"changes " + secure, func(l map[string]string) { l[secure] = "other" }},
		{"removes " + secure, func(l map[string]string) { delete(l, secure) }},
		{"removes every label", func(l map[string]string) { clear(l) }},
	} {
		if err := update(c.fn); !isCode(err, http.StatusForbidden) {
			t.Errorf("n1 %s: %v, want 403", c.what, err)
		}
		if l := labels(); l[secure] != "secure" || l["zone"] != "a" {
			t.Errorf("n1's labels after it %s: %v, want %s=secure and zone=a", c.what, l, secure)
		}
	}
	// A status write carries no labels.
	o, err := n1.Get(ctx, api.Nodes, "", "n1")
	if err != nil {
		t.Fatal(err)
	}
	o.GetObjectMeta().Labels[secure] = "other"
	_ = n1.UpdateStatus(ctx, api.Nodes, o)
	if l := labels(); l[secure] != "secure" {
		t.Errorf("n1's labels after it wrote %s=other with its status: %v", secure, l)
	}
	if err := update(func(l map[string]string) { l["zone"] = "b" }); err != nil {
		t.Fatalf("n1 changes its own label zone, keeping %s: %v", secure, err)
	}
	if l := labels(); l[secure] != "secure" || l["zone"] != "b" {
		t.Errorf("n1's labels = %v, want %s=secure and zone=b", l, secure)
	}
}
