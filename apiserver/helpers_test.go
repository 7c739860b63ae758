package apiserver_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/server/servertest"
)

// prefix is the root of every resource path.
const prefix = "/apis/" + api.Group + "/" + api.Version

// hangGuard bounds every wait in these tests so that a hang fails the test
// instead of blocking the binary. It is not a timing assertion.
const hangGuard = 30 * time.Second

// suite talks raw HTTPS to one running server, so that every test sees
// exactly the codes and bodies a client would.
type suite struct {
	env    *servertest.Env
	hc     *http.Client
	tokens map[string]string // user name -> bearer token; "admin" is cluster-admin
}

func newSuite(t *testing.T, env *servertest.Env) *suite {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(env.CA) {
		t.Fatal("the server's CA holds no certificate")
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	s := &suite{env: env, hc: &http.Client{Transport: tr}, tokens: map[string]string{"admin": env.Admin.Token()}}
	for _, u := range servertest.Users {
		s.tokens[u] = env.User(t, u).Token()
	}
	return s
}

// as returns a caller that sends user's token; "" sends no token.
func (s *suite) as(user string) caller {
	if user == "" {
		return caller{s: s}
	}
	tok, ok := s.tokens[user]
	if !ok {
		panic("no token for " + user)
	}
	return caller{s: s, token: tok}
}

// withToken returns a caller that sends tok verbatim.
func (s *suite) withToken(tok string) caller { return caller{s: s, token: tok} }

type caller struct {
	s     *suite
	token string
	// header, if set, replaces the Authorization header.
	header string
}

// result is one HTTP answer.
type result struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r result) String() string {
	b := string(r.Body)
	if len(b) > 600 {
		b = b[:600] + "…"
	}
	return strings.TrimSpace(b)
}

// do sends one request. body may be nil, []byte, string, an io.Reader
// (sent without a Content-Length) or anything else (sent as JSON).
// ctype defaults to application/json when there is a body.
func (c caller) do(t *testing.T, method, path string, body any, ctype string) result {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = struct{ io.Reader }{b} // hide the length
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.s.env.URL+path, rd)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if rd != nil {
		if ctype == "" {
			ctype = "application/json"
		}
		req.Header.Set("Content-Type", ctype)
	}
	switch {
	case c.header != "":
		req.Header.Set("Authorization", c.header)
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.s.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	return result{Code: resp.StatusCode, Header: resp.Header, Body: data}
}

func (c caller) get(t *testing.T, path string) result {
	t.Helper()
	return c.do(t, http.MethodGet, path, nil, "")
}

func (c caller) post(t *testing.T, path string, body any) result {
	t.Helper()
	return c.do(t, http.MethodPost, path, body, "")
}

func (c caller) put(t *testing.T, path string, body any) result {
	t.Helper()
	return c.do(t, http.MethodPut, path, body, "")
}

func (c caller) patch(t *testing.T, path string, body any) result {
	t.Helper()
	return c.do(t, http.MethodPatch, path, body, "application/merge-patch+json")
}

func (c caller) del(t *testing.T, path string) result {
	t.Helper()
	return c.do(t, http.MethodDelete, path, nil, "")
}

// whoami returns the caller's user name, or "" and the answer when the
// call fails.
func (c caller) whoami(t *testing.T) (string, result) {
	t.Helper()
	r := c.get(t, prefix+"/users/~")
	if r.Code != http.StatusOK {
		return "", r
	}
	var u api.User
	mustDecode(t, r, &u)
	return u.Name, r
}

// Paths.

func projectPath(name string) string {
	if name == "" {
		return prefix + "/projects"
	}
	return prefix + "/projects/" + name
}

func nsPath(project, resource string, rest ...string) string {
	p := prefix + "/namespaces/" + project + "/" + resource
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

func clusterPath(resource string, rest ...string) string {
	p := prefix + "/" + resource
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// Objects.

func project(name string) *api.Project {
	return &api.Project{ObjectMeta: api.ObjectMeta{Name: name}}
}

func serviceAccount(name string) *api.ServiceAccount {
	return &api.ServiceAccount{ObjectMeta: api.ObjectMeta{Name: name}}
}

func binding(name, roleKind, role string, subjects ...api.Subject) *api.RoleBinding {
	return &api.RoleBinding{
		ObjectMeta: api.ObjectMeta{Name: name},
		RoleRef:    api.RoleRef{Kind: roleKind, Name: role},
		Subjects:   subjects,
	}
}

func user(name string) api.Subject { return api.Subject{Kind: api.SubjectUser, Name: name} }

// Assertions.

func mustDecode(t *testing.T, r result, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decoding %q: %v", r, err)
	}
}

// mustCode fails the test now unless the answer has code want.
func mustCode(t *testing.T, what string, r result, want int) {
	t.Helper()
	if r.Code != want {
		t.Fatalf("%s: got %d, want %d; body: %s", what, r.Code, want, r)
	}
}

// checkCode reports a wrong code and lets the test go on.
func checkCode(t *testing.T, what string, r result, want int) bool {
	t.Helper()
	if r.Code != want {
		t.Errorf("%s: got %d, want %d; body: %s", what, r.Code, want, r)
		return false
	}
	return true
}

// checkStatus checks that a failure answer carries a Status body that
// agrees with the HTTP code, with the given reason (if not "") and a
// message containing msg (if not "").
func checkStatus(t *testing.T, what string, r result, code int, reason, msg string) api.Status {
	t.Helper()
	var st api.Status
	if !checkCode(t, what, r, code) {
		return st
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: got Content-Type %q, want application/json", what, ct)
	}
	if err := json.Unmarshal(r.Body, &st); err != nil {
		t.Errorf("%s: body is not a Status: %v: %s", what, err, r)
		return st
	}
	if st.Kind != "Status" || st.Status != "Failure" || st.Code != code {
		t.Errorf("%s: got kind=%q status=%q code=%d, want Status/Failure/%d", what, st.Kind, st.Status, st.Code, code)
	}
	if reason != "" && st.Reason != reason {
		t.Errorf("%s: got reason %q, want %q (message %q)", what, st.Reason, reason, st.Message)
	}
	if st.Message == "" {
		t.Errorf("%s: the Status has no message", what)
	}
	if msg != "" && !strings.Contains(st.Message, msg) {
		t.Errorf("%s: got message %q, want it to contain %q", what, st.Message, msg)
	}
	return st
}

// causeFields lists the fields a Status names.
func causeFields(st api.Status) []string {
	if st.Details == nil {
		return nil
	}
	var out []string
	for _, c := range st.Details.Causes {
		out = append(out, c.Field)
	}
	return out
}

// listNames lists the names of a collection as caller c; it fails the test
// unless the list is answered 200.
func (c caller) listNames(t *testing.T, path string) []string {
	t.Helper()
	r := c.get(t, path)
	mustCode(t, "list "+path, r, http.StatusOK)
	return namesOf(t, r)
}

func namesOf(t *testing.T, r result) []string {
	t.Helper()
	names := []string{}
	for _, m := range metasOf(t, r) {
		names = append(names, m.Name)
	}
	return names
}

// metasOf is the metadata of a list answer's items.
func metasOf(t *testing.T, r result) []api.ObjectMeta {
	t.Helper()
	var l struct {
		Items []struct {
			Metadata api.ObjectMeta `json:"metadata"`
		} `json:"items"`
	}
	mustDecode(t, r, &l)
	out := make([]api.ObjectMeta, len(l.Items))
	for i, it := range l.Items {
		out[i] = it.Metadata
	}
	return out
}

func listRV(t *testing.T, r result) string {
	t.Helper()
	var l struct {
		Metadata api.ListMeta `json:"metadata"`
	}
	mustDecode(t, r, &l)
	if l.Metadata.ResourceVersion == "" {
		t.Fatalf("list has no resourceVersion: %s", r)
	}
	return l.Metadata.ResourceVersion
}

func metaOf(t *testing.T, r result) api.ObjectMeta {
	t.Helper()
	var o struct {
		Metadata api.ObjectMeta `json:"metadata"`
	}
	mustDecode(t, r, &o)
	return o.Metadata
}

// Setup.

// createProject creates a project as user, who becomes its admin.
func (s *suite) createProject(t *testing.T, owner, name string) {
	t.Helper()
	mustCode(t, owner+" creates project "+name, s.as(owner).post(t, projectPath(""), project(name)), http.StatusCreated)
}

// setupTeam creates a project owned by alice in which bob holds view and
// carol holds edit, granted by alice.
func (s *suite) setupTeam(t *testing.T, name string) {
	t.Helper()
	s.createProject(t, "alice", name)
	alice := s.as("alice")
	mustCode(t, "alice grants bob view", alice.post(t, nsPath(name, "rolebindings"), binding("bob-view", "ClusterRole", "view", user("bob"))), http.StatusCreated)
	mustCode(t, "alice grants carol edit", alice.post(t, nsPath(name, "rolebindings"), binding("carol-edit", "ClusterRole", "edit", user("carol"))), http.StatusCreated)
}

// Watch.

type watchEvent struct {
	Type   string          `json:"type"`
	Object json.RawMessage `json:"object"`
}

func (e watchEvent) name(t *testing.T) string {
	t.Helper()
	var o struct {
		Metadata api.ObjectMeta `json:"metadata"`
	}
	if err := json.Unmarshal(e.Object, &o); err != nil {
		t.Fatalf("watch event object: %v", err)
	}
	return o.Metadata.Name
}

type watchStream struct {
	result                 // the answer when it is not 200
	events chan watchEvent // closed at the end of the stream
	stop   context.CancelFunc
}

// watch opens a watch stream at path with query q (watch=true is added).
// A non-200 answer is returned in result with events nil.
func (c caller) watch(t *testing.T, path string, q url.Values) *watchStream {
	t.Helper()
	if q == nil {
		q = url.Values{}
	}
	q.Set("watch", "true")
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.s.env.URL+path+"?"+q.Encode(), nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.s.hc.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("watch %s: %v", path, err)
	}
	w := &watchStream{stop: cancel}
	t.Cleanup(w.close)
	w.Code, w.Header = resp.StatusCode, resp.Header
	if resp.StatusCode != http.StatusOK {
		w.Body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		return w
	}
	w.events = make(chan watchEvent, 64)
	go func() {
		defer close(w.events)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		for sc.Scan() {
			var ev watchEvent
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				ev = watchEvent{Type: "BAD LINE: " + sc.Text()}
			}
			select {
			case w.events <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return w
}

func (w *watchStream) close() { w.stop() }

// next returns the next event; it fails the test if the stream ends or
// nothing arrives before the hang guard.
func (w *watchStream) next(t *testing.T) watchEvent {
	t.Helper()
	select {
	case ev, ok := <-w.events:
		if !ok {
			t.Fatal("the watch stream ended early")
		}
		return ev
	case <-time.After(hangGuard):
		t.Fatal("no watch event arrived")
	}
	return watchEvent{}
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

// knownBug skips a check that fails because of a server bug reported along
// with these tests. Delete the call once the bug is fixed: the check below
// it is complete.
func knownBug(t *testing.T, what string) {
	t.Helper()
	t.Skip("BUG: " + what)
}
