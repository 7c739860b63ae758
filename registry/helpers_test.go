package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/server/servertest"
)

// hangGuard bounds every request so that a hang fails the test instead of
// blocking the binary. It is not a timing assertion.
const hangGuard = 60 * time.Second

// manifestAccept is what a modern client accepts for manifests.
const manifestAccept = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// harness is one running server with logged-in users.
type harness struct {
	env *servertest.Env
	hc  *http.Client

	mu      sync.Mutex
	clients map[string]*client.Client
}

func start(t *testing.T, opts ...servertest.Option) *harness {
	t.Helper()
	env := servertest.Start(t, opts...)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(tr.CloseIdleConnections)
	return &harness{
		env:     env,
		hc:      &http.Client{Transport: tr, Timeout: hangGuard, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		clients: map[string]*client.Client{"admin": env.Admin},
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	t.Cleanup(cancel)
	return ctx
}

// user returns a logged-in API client; "admin" is the cluster admin.
func (h *harness) user(t *testing.T, u string) *client.Client {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[u]; ok {
		return c
	}
	c := h.env.User(t, u)
	h.clients[u] = c
	return c
}

// token is a user's platform token; "" for anonymous.
func (h *harness) token(t *testing.T, u string) string {
	t.Helper()
	if u == "" {
		return ""
	}
	return h.user(t, u).Token()
}

// project creates a project as owner, who becomes its admin.
func (h *harness) project(t *testing.T, owner, p string, public bool) {
	t.Helper()
	err := h.user(t, owner).Create(ctxT(t), api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: p}, Spec: api.ProjectSpec{Public: public}})
	if err != nil {
		t.Fatalf("create project %s as %s: %v", p, owner, err)
	}
}

// grant binds a ClusterRole to a user in a project, as the cluster admin.
func (h *harness) grant(t *testing.T, project, role, u string) {
	t.Helper()
	b := &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: role + "-" + u, Namespace: project},
		RoleRef:    api.RoleRef{Kind: "ClusterRole", Name: role},
		Subjects:   []api.Subject{{Kind: api.SubjectUser, Name: u}},
	}
	if err := h.env.Admin.Create(ctxT(t), api.RoleBindings, b); err != nil {
		t.Fatalf("bind %s to %s in %s: %v", role, u, project, err)
	}
}

func (h *harness) ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(h.env.Registry+"/"+s, name.Insecure)
	if err != nil {
		t.Fatalf("parse reference %q: %v", s, err)
	}
	return r
}

// push writes img to ref (relative to the registry, "repo:tag" or
// "repo@digest") as u ("" anonymous), the way docker does: token flow,
// blob uploads, manifest PUT. It returns the status of the manifest PUT (0
// when it was not reached) and an error unless the push succeeded. The
// client is ggcr's remote package, or with -tags rawclient a small raw
// client (client_raw_test.go).
func (h *harness) push(t *testing.T, u, ref string, img v1.Image) (int, error) {
	t.Helper()
	return h.client().push(t, h, u, ref, img)
}

// pushOK pushes and fails the test on error; it returns the digest.
func (h *harness) pushOK(t *testing.T, u, ref string, img v1.Image) string {
	t.Helper()
	if _, err := h.push(t, u, ref, img); err != nil {
		t.Fatalf("push %s as %s: %v", ref, u, err)
	}
	return digestOf(t, img)
}

// pull fetches a manifest with the same client as push.
func (h *harness) pull(t *testing.T, u, ref string) (manifest []byte, dgst string, err error) {
	t.Helper()
	return h.client().pull(t, h, u, ref)
}

// ociClient is a registry client as users run it.
type ociClient interface {
	push(t *testing.T, h *harness, u, ref string, img v1.Image) (int, error)
	pull(t *testing.T, h *harness, u, ref string) ([]byte, string, error)
}

func digestOf(t *testing.T, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

func rawManifest(t *testing.T, img v1.Image) []byte {
	t.Helper()
	b, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// layerDigest is the digest of img's first layer.
func layerDigest(t *testing.T, img v1.Image) string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		t.Fatalf("layers: %v (%d)", err, len(ls))
	}
	d, err := ls[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// resp is one raw HTTP answer.
type resp struct {
	code   int
	header http.Header
	body   []byte
}

// errCode is the first error code of a spec error body, or "".
func (r resp) errCode() string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(r.body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func (r resp) String() string {
	b := string(r.body)
	if !utf8.ValidString(b) {
		return fmt.Sprintf("%d <%d bytes>", r.code, len(r.body))
	}
	if len(b) > 300 {
		b = b[:300] + "…"
	}
	return fmt.Sprintf("%d %q", r.code, strings.TrimSpace(b))
}

// req describes one raw request.
type req struct {
	method string
	path   string // escaped path and query, or an absolute URL
	user   string // "" is anonymous; sent as Basic x:token
	bearer string // sent verbatim as a Bearer token when set
	header http.Header
	body   []byte
}

func (h *harness) do(t *testing.T, r req) resp {
	t.Helper()
	u := r.path
	if !strings.HasPrefix(u, "http://") {
		u = "http://" + h.env.Registry + r.path
	}
	hr, err := http.NewRequestWithContext(ctxT(t), r.method, u, bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	if r.body == nil {
		hr.Body, hr.ContentLength = http.NoBody, 0
	}
	for k, vs := range r.header {
		for _, v := range vs {
			hr.Header.Add(k, v)
		}
	}
	if r.user != "" {
		hr.SetBasicAuth("x", h.token(t, r.user))
	}
	if r.bearer != "" {
		hr.Header.Set("Authorization", "Bearer "+r.bearer)
	}
	res, err := h.hc.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", r.method, r.path, err)
	}
	return resp{code: res.StatusCode, header: res.Header, body: body}
}

// next resolves a Location header against the registry and adds query.
func (h *harness) next(t *testing.T, loc string, query url.Values) string {
	t.Helper()
	base, _ := url.Parse("http://" + h.env.Registry + "/")
	l, err := url.Parse(loc)
	if err != nil {
		t.Fatalf("Location %q: %v", loc, err)
	}
	u := base.ResolveReference(l)
	q := u.Query()
	for k, vs := range query {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// startUpload opens an upload session and returns its Location.
func (h *harness) startUpload(t *testing.T, u, repo string) string {
	t.Helper()
	r := h.do(t, req{method: http.MethodPost, path: "/v2/" + repo + "/blobs/uploads/", user: u})
	if r.code != http.StatusAccepted {
		t.Fatalf("POST /v2/%s/blobs/uploads/ as %s: got %v, want 202", repo, u, r)
	}
	return r.header.Get("Location")
}

// uploadBlob uploads data to repo in one PUT, closing with dgst ("" is
// its sha256), and returns the answer to the PUT.
func (h *harness) uploadBlob(t *testing.T, u, repo string, data []byte, dgst string) resp {
	t.Helper()
	if dgst == "" {
		dgst = sha256Of(data)
	}
	loc := h.startUpload(t, u, repo)
	return h.do(t, req{method: http.MethodPut, path: h.next(t, loc, url.Values{"digest": {dgst}}), user: u,
		header: http.Header{"Content-Type": {"application/octet-stream"}}, body: data})
}

func (h *harness) uploadBlobOK(t *testing.T, u, repo string, data []byte) string {
	t.Helper()
	r := h.uploadBlob(t, u, repo, data, "")
	if r.code != http.StatusCreated {
		t.Fatalf("upload blob to %s as %s: got %v, want 201", repo, u, r)
	}
	return sha256Of(data)
}

func (h *harness) putManifest(t *testing.T, u, repo, ref, mediaType string, body []byte) resp {
	t.Helper()
	return h.do(t, req{method: http.MethodPut, path: "/v2/" + repo + "/manifests/" + ref, user: u,
		header: http.Header{"Content-Type": {mediaType}}, body: body})
}

// getManifest fetches a manifest by tag or digest.
func (h *harness) getManifest(t *testing.T, u, repo, ref string) resp {
	t.Helper()
	return h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/manifests/" + ref, user: u, header: http.Header{"Accept": {manifestAccept}}})
}

// stream reads an ImageStream as the cluster admin.
func (h *harness) stream(t *testing.T, project, stream string) (*api.ImageStream, error) {
	t.Helper()
	o, err := h.env.Admin.Get(ctxT(t), api.ImageStreams, project, stream)
	if err != nil {
		return nil, err
	}
	return o.(*api.ImageStream), nil
}

// history is a tag's digests, newest first; nil when the tag is absent.
func (h *harness) history(t *testing.T, project, stream, tag string) []api.TagEvent {
	t.Helper()
	is, err := h.stream(t, project, stream)
	if api.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("get imagestream %s/%s: %v", project, stream, err)
	}
	for _, tg := range is.Status.Tags {
		if tg.Tag == tag {
			return tg.Items
		}
	}
	return nil
}

// image reads an Image record as the cluster admin.
func (h *harness) image(t *testing.T, project, dgst string) (*api.Image, error) {
	t.Helper()
	o, err := h.env.Admin.Get(ctxT(t), api.Images, project, dgst)
	if err != nil {
		return nil, err
	}
	return o.(*api.Image), nil
}

// registryToken asks /v2/token for scopes as u ("" anonymous).
func (h *harness) registryToken(t *testing.T, u string, scopes ...string) string {
	t.Helper()
	q := url.Values{"service": {"slipway-registry"}, "scope": scopes}
	r := h.do(t, req{method: http.MethodGet, path: "/v2/token?" + q.Encode(), user: u})
	if r.code != http.StatusOK {
		t.Fatalf("GET /v2/token as %q: got %v, want 200", u, r)
	}
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || out.Token == "" {
		t.Fatalf("token answer %s: %v", r.body, err)
	}
	return out.Token
}

// jwtPart decodes the header (0) or payload (1) of a JWT.
func jwtPart(t *testing.T, tok string, i int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("token part %d: %v", i, err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("token part %d: %v", i, err)
	}
	return m
}

// grantedActions is what a token grants on one repository.
func grantedActions(t *testing.T, tok, repo string) []string {
	t.Helper()
	var out []string
	acc, _ := jwtPart(t, tok, 1)["access"].([]any)
	for _, a := range acc {
		m, _ := a.(map[string]any)
		if m["type"] != "repository" || m["name"] != repo {
			continue
		}
		as, _ := m["actions"].([]any)
		for _, x := range as {
			s, _ := x.(string)
			out = append(out, s)
		}
	}
	return out
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func sha512Of(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512:" + hex.EncodeToString(s[:])
}

// ociManifest is an OCI image manifest, built by hand for spec-level tests.
type ociManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        descriptor        `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Subject       *descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

const (
	ociManifestType = "application/vnd.oci.image.manifest.v1+json"
	ociEmptyType    = "application/vnd.oci.empty.v1+json"
)

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jsonField is a top-level string field of a JSON object, or "".
func jsonField(b []byte, field string) string {
	m := map[string]any{}
	_ = json.Unmarshal(b, &m)
	s, _ := m[field].(string)
	return s
}
