package apiserver

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/store"
)

// Node identity (issue 12). A node agent that runs outside the API
// server's process holds a client certificate of the platform CA whose
// common name is NodeUserPrefix+NAME, which it got once by joining with a
// one-use bootstrap token (POST /bootstrap/nodes/NAME). The serial of the
// node's certificate is kept in its Node's NodeCredentialAnnotation: a
// certificate whose serial is not there (the Node was deleted, or the node
// joined again) authenticates no one. The node authorizer (authorizeNode)
// then decides everything a node asks, in place of RBAC.
const (
	NodeUserPrefix = "system:node:"
	GroupNodes     = "system:nodes"
	// NodeCredentialAnnotation on a Node is the hex serial of the one
	// certificate that acts as that node.
	NodeCredentialAnnotation = "slipway.dev/node-credential"
)

// NodeServices is what the API server does for node agents in other
// processes: sign their certificates, hand out registry credentials for
// their pods' images, and run the admission policy on their pods.
type NodeServices interface {
	// SignNode signs a node's certificate request (its common name is
	// already checked) and returns the certificate, DER.
	SignNode(node string, csr *x509.CertificateRequest) ([]byte, error)
	// CA is the platform CA, PEM: what signed the API's certificate and
	// the nodes'.
	CA() []byte
	// PullCredentials is the X-Registry-Auth for image of pod ("" for
	// anonymous), or an error when the pod's project may not pull it.
	PullCredentials(ctx context.Context, pod *api.Pod, image string) (string, error)
	// Admit runs the image policies of the pod's project on the pod.
	Admit(ctx context.Context, pod *api.Pod) error
}

// NodeJoinRequest is the body of POST /bootstrap/nodes/NAME.
type NodeJoinRequest struct {
	// CSR is a PEM certificate request whose common name is
	// system:node:NAME.
	CSR string `json:"csr"`
}

// NodeJoinResponse is its answer: the node's certificate and the CA, PEM.
type NodeJoinResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// PullCredentialsRequest is the body of POST pods/NAME/pullcredentials.
type PullCredentialsRequest struct {
	Image string `json:"image"`
}

// PullCredentialsResponse is its answer.
type PullCredentialsResponse struct {
	// Auth is the X-Registry-Auth header's value; "" pulls anonymously.
	Auth string `json:"auth"`
}

// nodeName is the node a request acts as, if it is a node's.
func nodeName(u identity.Info) (string, bool) {
	name, ok := strings.CutPrefix(u.Name, NodeUserPrefix)
	if !ok || name == "" {
		return "", false
	}
	for _, g := range u.Groups {
		if g == GroupNodes {
			return name, true
		}
	}
	return "", false
}

// authenticateNode resolves a verified client certificate of the
// platform CA to the node it names. ok is false when the request carries
// no node certificate.
func (s *Server) authenticateNode(r *http.Request) (u identity.Info, ok bool, err error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
		return identity.Info{}, false, nil
	}
	leaf := r.TLS.VerifiedChains[0][0]
	name, isNode := strings.CutPrefix(leaf.Subject.CommonName, NodeUserPrefix)
	if !isNode || name == "" {
		return identity.Info{}, false, nil
	}
	o, found := s.informers[api.Nodes].Get("", name)
	if !found {
		// Joined through another API server whose write this cache has
		// not seen yet: etcd says.
		var err error
		if o, err = s.store.Get(r.Context(), api.Nodes, "", name); err == nil {
			found = true
		} else if !errors.Is(err, store.ErrNotFound) {
			return identity.Info{}, true, err
		}
	}
	if !found || o.GetObjectMeta().Annotations[NodeCredentialAnnotation] != hex.EncodeToString(leaf.SerialNumber.Bytes()) {
		return identity.Info{}, true, fmt.Errorf("%w: the certificate of node %s was revoked (its Node was deleted, or the node joined again); join again with a new bootstrap token (slipway adm create-bootstrap-token %s)", identity.ErrUnauthenticated, name, name)
	}
	return identity.Info{Name: NodeUserPrefix + name, Groups: []string{GroupNodes, identity.GroupAuthenticated}}, true, nil
}

// nodeForbidden is the answer to whatever a node may not do.
func nodeForbidden(node, format string, args ...any) error {
	return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "node %s %s: a node reads only the pods bound to it and what they need, and writes only its own Node, its pods' status and events about them", node, fmt.Sprintf(format, args...))
}

// authorizeNode is the node authorizer: what node may do, in place of
// RBAC. For a list or watch it returns the filter the answer goes
// through (nil: everything).
//
//   - pods: get, list and watch those bound to it (lists and watches are
//     filtered by spec.nodeName here, whatever was asked); update and
//     patch their status; pullcredentials and admission of them.
//   - nodes: get, update and patch its own (status too); list and watch
//     only with fieldSelector metadata.name=itself.
//   - services, endpoints (the service proxy) and projects (volumes):
//     get, list and watch.
//   - events: create, about a pod bound to it (admitNodeEvent), as the
//     warning that a pod's image assumes root.
//
// Nothing else: no Secrets (pods reference none), no RoleBindings, no
// tokens, no other node's pods or Node.
func (s *Server) authorizeNode(ctx context.Context, node string, info *requestInfo, opts store.ListOptions) (func(api.Object) bool, error) {
	res, verb, sub := info.Resource, info.Verb, info.Subresource
	read := verb == "get" || verb == "list" || verb == "watch"
	switch res {
	case api.Pods:
		switch {
		case verb == "list" || verb == "watch":
			return func(o api.Object) bool { return o.(*api.Pod).Spec.NodeName == node }, nil
		case verb == "get" && sub == "",
			(verb == "update" || verb == "patch") && sub == "status",
			verb == "create" && (sub == "pullcredentials" || sub == "admission"):
			o, err := s.store.Get(ctx, api.Pods, info.Namespace, info.Name)
			if errors.Is(err, store.ErrNotFound) {
				return nil, nodeForbidden(node, "may not %s pod %s/%s: it is not bound to this node", verb, info.Namespace, info.Name)
			}
			if err != nil {
				return nil, err
			}
			if o.(*api.Pod).Spec.NodeName != node {
				return nil, nodeForbidden(node, "may not %s pod %s/%s: it is not bound to this node", verb, info.Namespace, info.Name)
			}
			return nil, nil
		}
	case api.Nodes:
		switch {
		case (verb == "list" || verb == "watch") && opts.Name == node:
			return nil, nil
		case (verb == "get" || verb == "update" || verb == "patch") && (sub == "" || sub == "status") && info.Name == node:
			return nil, nil
		}
	case api.Services, api.EndpointsResource, api.Projects, api.NetworkPolicies: // NetworkPolicies: cluster/netpol enforces them on the node
		if read && sub == "" {
			return nil, nil
		}
	case api.Events:
		if verb == "create" && sub == "" {
			return nil, nil // about its own pods only: admitNodeEvent
		}
	}
	what := res.Name
	if sub != "" {
		what += "/" + sub
	}
	target := ""
	if info.Name != "" {
		target = " " + info.Name
	}
	if info.Namespace != "" {
		target += " in " + info.Namespace
	}
	return nil, nodeForbidden(node, "may not %s %s%s", verb, what, target)
}

// admitNodeEvent lets a node record events only about pods bound to it,
// in their project.
func (s *Server) admitNodeEvent(ctx context.Context, node, ns string, ev *api.Event) error {
	ref := ev.InvolvedObject
	if ref.Kind != "Pod" || (ref.Namespace != "" && ref.Namespace != ns) {
		return nodeForbidden(node, "may not create an event about %s %s/%s: only about pods bound to it", ref.Kind, ref.Namespace, ref.Name)
	}
	o, err := s.store.Get(ctx, api.Pods, ns, ref.Name)
	if errors.Is(err, store.ErrNotFound) || (err == nil && o.(*api.Pod).Spec.NodeName != node) {
		return nodeForbidden(node, "may not create an event about pod %s/%s: it is not bound to this node", ns, ref.Name)
	}
	return err
}

// admitNode keeps what only the platform and admins write on a Node that
// a node writes itself: the serial of its credential, and its spec (a
// cordoned node cannot uncordon itself), silently; and it refuses a
// node's write that adds, changes or removes a label under
// api.NodeRestrictionLabelPrefix, as Kubernetes' NodeRestriction does:
// those labels steer workloads, and the node would otherwise not learn
// why its label did not stick.
func (s *Server) admitNode(ctx context.Context, u identity.Info, n *api.Node) error {
	node, ok := nodeName(u)
	if !ok {
		return nil
	}
	o, err := s.store.Get(ctx, api.Nodes, "", n.Name)
	if err != nil {
		return err
	}
	old := o.(*api.Node)
	for _, l := range []map[string]string{n.Labels, old.Labels} {
		for k := range l {
			if !strings.HasPrefix(k, api.NodeRestrictionLabelPrefix) {
				continue
			}
			was, had := old.Labels[k]
			is, has := n.Labels[k]
			if had != has || was != is {
				return api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "node %s may not add, change or remove label %s on its Node: labels under %s are set only by cluster admins (they select the nodes workloads may run on); leave it out of --node-labels and ask a cluster admin to set it", node, k, api.NodeRestrictionLabelPrefix)
			}
		}
	}
	n.Spec = old.Spec
	cred := o.GetObjectMeta().Annotations[NodeCredentialAnnotation]
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[NodeCredentialAnnotation] = cred
	return nil
}

// createBootstrapToken answers POST nodes/NAME/bootstrap-token (create
// nodes/bootstrap-token, cluster admins): a one-use token to join the
// node NAME, for spec.expirationSeconds (default an hour, at most a day).
func (s *Server) createBootstrapToken(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	var req api.TokenRequest
	if r.ContentLength != 0 {
		data, _, err := readBody(w, r, s.cfg.MaxBodyBytes, false)
		if err == nil {
			err = decodeStrictAny("TokenRequest", data, &req)
		}
		if err != nil {
			writeError(w, err)
			return
		}
	}
	if req.Spec.ExpirationSeconds < 0 || req.Spec.ExpirationSeconds > int64(identity.MaxBootstrapTTL/time.Second) {
		writeError(w, badField("spec.expirationSeconds", "a bootstrap token lives from 1 second to %d seconds (a day); 0 means an hour", int64(identity.MaxBootstrapTTL/time.Second)))
		return
	}
	if msgs := validation.IsDNS1123Subdomain(info.Name); len(msgs) > 0 {
		writeError(w, invalidName("node", info.Name, msgs))
		return
	}
	secret, tok, err := s.authn.IssueBootstrapToken(r.Context(), info.Name, time.Duration(req.Spec.ExpirationSeconds)*time.Second)
	if err != nil {
		writeError(w, err)
		return
	}
	req.TypeMeta = api.TypeMeta{APIVersion: api.APIVersion, Kind: "TokenRequest"}
	req.Status = api.TokenRequestStatus{Token: secret, ExpirationTimestamp: tok.Spec.ExpiresAt}
	writeJSON(w, http.StatusCreated, req)
}

// joinNode answers POST /bootstrap/nodes/NAME, authenticated by a
// bootstrap token for NAME (which it uses up): it signs the node's
// certificate request, whose common name must be system:node:NAME, and
// records the certificate's serial on the Node (made if missing), which
// revokes any earlier certificate of that node.
func (s *Server) joinNode(w http.ResponseWriter, r *http.Request) {
	setAction(r, "join", "nodes")
	name := r.PathValue("name")
	if s.cfg.Nodes == nil {
		writeStatus(w, api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "this API server does not sign node certificates"))
		return
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		writeError(w, invalidName("node", name, msgs))
		return
	}
	tok, ok := bearer(r)
	if !ok {
		writeStatus(w, api.NewStatus(http.StatusUnauthorized, api.ReasonUnauthorized, "joining a node needs a bootstrap token: ask a cluster admin for one (slipway adm create-bootstrap-token %s)", name))
		return
	}
	var req NodeJoinRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the body must be {\"csr\": \"-----BEGIN CERTIFICATE REQUEST-----…\"}: %v", err))
		return
	}
	block, _ := pem.Decode([]byte(req.CSR))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "csr is not a PEM CERTIFICATE REQUEST"))
		return
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err == nil {
		err = csr.CheckSignature()
	}
	if err != nil {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "csr: %v", err))
		return
	}
	if want := NodeUserPrefix + name; csr.Subject.CommonName != want {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the request's common name is %q; a node joining as %s must ask for %q", csr.Subject.CommonName, name, want))
		return
	}
	if err := s.authn.RedeemBootstrapToken(r.Context(), tok, name); err != nil {
		if errors.Is(err, identity.ErrBootstrapToken) {
			writeStatus(w, api.NewStatus(http.StatusUnauthorized, api.ReasonUnauthorized, "%s; ask a cluster admin for a new one (slipway adm create-bootstrap-token %s)", strings.TrimPrefix(err.Error(), "identity: "), name))
			return
		}
		writeError(w, err)
		return
	}
	setUser(r, identity.BootstrapUserPrefix+name)
	der, err := s.cfg.Nodes.SignNode(name, csr)
	if err != nil {
		writeError(w, err)
		return
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		writeError(w, err)
		return
	}
	serial := hex.EncodeToString(cert.SerialNumber.Bytes())
	ctx := r.Context()
	obj, err := s.store.GuaranteedUpdate(ctx, api.Nodes, "", name, store.UpdateOptions{}, func(o api.Object) error {
		m := o.GetObjectMeta()
		if m.Annotations == nil {
			m.Annotations = map[string]string{}
		}
		m.Annotations[NodeCredentialAnnotation] = serial
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		n := &api.Node{ObjectMeta: api.ObjectMeta{Name: name, Annotations: map[string]string{NodeCredentialAnnotation: serial}}}
		err, obj = s.store.Create(ctx, api.Nodes, n), n
	}
	if err != nil {
		writeError(w, err)
		return
	}
	s.waitCache(ctx, api.Nodes, revisionOf(obj))
	writeJSON(w, http.StatusCreated, NodeJoinResponse{
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		CA:          string(s.cfg.Nodes.CA()),
	})
}

// pullCredentials answers POST pods/NAME/pullcredentials {"image": …}
// for the node the pod is bound to (authorizeNode checked that).
func (s *Server) pullCredentials(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	pod, ok := s.nodePod(w, r, info)
	if !ok {
		return
	}
	var req PullCredentialsRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil || req.Image == "" {
		writeStatus(w, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the body must be {\"image\": \"REF\"}"))
		return
	}
	if !podHasImage(pod, req.Image) {
		writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "pod %s/%s runs no image %s", pod.Namespace, pod.Name, req.Image))
		return
	}
	auth, err := s.cfg.Nodes.PullCredentials(r.Context(), pod, req.Image)
	if err != nil {
		writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, PullCredentialsResponse{Auth: auth})
}

// admission answers POST pods/NAME/admission: the image policies of the
// pod's project, run here, where the policies and scans are.
func (s *Server) admission(w http.ResponseWriter, r *http.Request, info *requestInfo) {
	pod, ok := s.nodePod(w, r, info)
	if !ok {
		return
	}
	if err := s.cfg.Nodes.Admit(r.Context(), pod); err != nil {
		writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, &api.Status{TypeMeta: api.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: "Success", Code: http.StatusOK, Message: "admitted"})
}

// nodePod is the pod of a node's request; only nodes ask these.
func (s *Server) nodePod(w http.ResponseWriter, r *http.Request, info *requestInfo) (*api.Pod, bool) {
	if _, ok := nodeName(identity.FromContext(r.Context())); !ok {
		writeStatus(w, api.NewStatus(http.StatusForbidden, api.ReasonForbidden, "only node agents ask for pods/%s", info.Subresource))
		return nil, false
	}
	if s.cfg.Nodes == nil {
		writeStatus(w, api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "this API server does not serve nodes"))
		return nil, false
	}
	o, err := s.store.Get(r.Context(), api.Pods, info.Namespace, info.Name)
	if err != nil {
		writeError(w, err)
		return nil, false
	}
	return o.(*api.Pod), true
}

func podHasImage(p *api.Pod, image string) bool {
	for _, c := range p.Spec.Containers {
		if c.Image == image {
			return true
		}
	}
	return false
}
