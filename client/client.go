// Package client talks to the Slipway API. The CLI and every controller use
// it; errors come back as *api.Status, so callers can test api.IsNotFound and
// friends.
package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"slipway.dev/slipway/api"
)

// Client is a Slipway API client. It is safe for concurrent use.
type Client struct {
	base  *url.URL
	http  *http.Client
	token string
	tls   *tls.Config
	warn  func(string)
}

// Option configures a Client.
type Option func(*Client) error

// WithToken sends a bearer token. Default: none.
func WithToken(t string) Option { return func(c *Client) error { c.token = t; return nil } }

// WithCAData trusts the PEM certificates in ca. Default: the system roots.
func WithCAData(ca []byte) Option {
	return func(c *Client) error {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(ca) {
			return errors.New("client: the certificate authority data holds no PEM certificate")
		}
		c.tls.RootCAs = pool
		return nil
	}
}

// WithClientCertificate presents cert to the server: a node's
// credential (system:node:NAME), issued by JoinNode.
func WithClientCertificate(cert tls.Certificate) Option {
	return func(c *Client) error {
		c.tls.Certificates = []tls.Certificate{cert}
		return nil
	}
}

// WithWarnings calls warn with each warning the server attaches to an
// answer (the Warning header's text, as kubectl shows them), such as a
// token lifetime shortened to the server's maximum. Default: warnings are
// dropped.
func WithWarnings(warn func(msg string)) Option {
	return func(c *Client) error { c.warn = warn; return nil }
}

// WithTransport sends every request through rt instead of a connection
// of the client's own (the TLS options then do nothing): for a server
// that calls its own API handler in process as one of its users, as the
// web console does. Default: HTTP/1.1 connections to the server.
func WithTransport(rt http.RoundTripper) Option {
	return func(c *Client) error { c.http.Transport = rt; return nil }
}

// WithInsecureSkipVerify accepts any server certificate. Default false.
func WithInsecureSkipVerify() Option {
	return func(c *Client) error { c.tls.InsecureSkipVerify = true; return nil }
}

// WithTimeout bounds each non-watch request. Default 60s.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) error { c.http.Timeout = d; return nil }
}

// New returns a client for the API at server, such as
// https://127.0.0.1:8443.
func New(server string, opts ...Option) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("client: server %q is not a URL like https://HOST:8443", server)
	}
	c := &Client{base: u, tls: &tls.Config{MinVersion: tls.VersionTLS12}}
	// HTTP/1.1 with a pool of keep-alive connections, not HTTP/2: over
	// HTTP/2 every concurrent request of a client shares one TLS
	// connection, whose single reader and writer on each side serialize
	// them (apibench: 32 concurrent creates ran slower over one HTTP/2
	// connection than over 32 HTTP/1.1 ones). Each request or watch in
	// flight holds a connection of its own; up to MaxIdleConnsPerHost of
	// them are kept for reuse, so a busy client does not handshake again.
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     c.tls,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
		// A non-nil, empty map turns HTTP/2 off even when a caller's
		// TLS configuration would allow it.
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	c.http = &http.Client{Transport: tr}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Server is the API's base URL.
func (c *Client) Server() string { return c.base.String() }

// Token is the bearer token the client sends.
func (c *Client) Token() string { return c.token }

// Path is the URL path of a resource collection or object.
func Path(r *api.Resource, ns, name string, sub ...string) string {
	p := "/apis/" + api.Group + "/" + api.Version
	if r.Namespaced && ns != "" {
		p += "/namespaces/" + url.PathEscape(ns)
	}
	p += "/" + r.Name
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	for _, s := range sub {
		p += "/" + s
	}
	return p
}

// Do sends one request and returns the response; non-2xx answers become a
// *api.Status error and the body is closed.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body []byte, contentType string) (*http.Response, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(c.base.Path, "/") + path
	u.RawPath = ""
	if unesc, err := url.PathUnescape(u.Path); err == nil && unesc != u.Path {
		u.RawPath, u.Path = u.Path, unesc
	}
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		if contentType == "" {
			contentType = "application/json"
		}
		req.Header.Set("Content-Type", contentType)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var uerr x509.UnknownAuthorityError
		if errors.As(err, &uerr) || strings.Contains(err.Error(), "certificate signed by unknown authority") {
			return nil, fmt.Errorf("the server's certificate is not trusted: log in with --certificate-authority=DATA_DIR/pki/ca.crt, or confirm its fingerprint at `slipway login`: %w", err)
		}
		return nil, fmt.Errorf("cannot reach the Slipway API at %s (is `slipway start` running?): %w", c.base, err)
	}
	if c.warn != nil {
		for _, h := range resp.Header.Values("Warning") {
			c.warn(warningText(h))
		}
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeStatus(resp)
	}
	return resp, nil
}

// warningText is the text of a Warning header, `299 - "text"`.
func warningText(h string) string {
	if _, rest, ok := strings.Cut(h, " - "); ok {
		if t, err := strconv.Unquote(strings.TrimSpace(rest)); err == nil {
			return t
		}
	}
	return h
}

func decodeStatus(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var st api.Status
	if err := json.Unmarshal(data, &st); err != nil || st.Message == "" {
		return api.NewStatus(resp.StatusCode, http.StatusText(resp.StatusCode), "the server answered %s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	if st.Code == 0 {
		st.Code = resp.StatusCode
	}
	return &st
}

func (c *Client) doJSON(ctx context.Context, method, path string, query url.Values, in any, contentType string, out any) error {
	var body []byte
	if in != nil {
		switch v := in.(type) {
		case []byte:
			body = v
		default:
			var err error
			if body, err = json.Marshal(in); err != nil {
				return err
			}
		}
	}
	resp, err := c.Do(ctx, method, path, query, body, contentType)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: decoding the answer to %s %s: %w", method, path, err)
	}
	return nil
}

// Get reads one object.
func (c *Client) Get(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	obj := r.NewObject()
	return obj, c.doJSON(ctx, http.MethodGet, Path(r, ns, name), nil, nil, "", obj)
}

// ListOptions narrow a List or Watch.
type ListOptions struct {
	LabelSelector string
	Name          string
	Limit         int64
	Continue      string
	// Field is a field selector term besides the name, such as
	// spec.nodeName=NODE for pods.
	Field string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.LabelSelector != "" {
		q.Set("labelSelector", o.LabelSelector)
	}
	var fields []string
	if o.Name != "" {
		fields = append(fields, "metadata.name="+o.Name)
	}
	if o.Field != "" {
		fields = append(fields, o.Field)
	}
	if len(fields) > 0 {
		q.Set("fieldSelector", strings.Join(fields, ","))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.FormatInt(o.Limit, 10))
	}
	if o.Continue != "" {
		q.Set("continue", o.Continue)
	}
	return q
}

// List reads one page of at most opts.Limit objects, or, when Limit is 0,
// all of them: it follows the continue tokens of the server's pages (the
// server answers at most its page size however many are asked for), and
// the answer's resourceVersion is the first page's, at which every page
// was read.
func (c *Client) List(ctx context.Context, r *api.Resource, ns string, opts ListOptions) ([]api.Object, api.ListMeta, error) {
	items, meta, err := c.listPage(ctx, r, ns, opts)
	for err == nil && opts.Limit == 0 && meta.Continue != "" {
		opts.Continue = meta.Continue
		var more []api.Object
		var next api.ListMeta
		if more, next, err = c.listPage(ctx, r, ns, opts); err == nil {
			items, meta.Continue = append(items, more...), next.Continue
		}
	}
	if err != nil {
		return nil, api.ListMeta{}, err
	}
	return items, meta, nil
}

func (c *Client) listPage(ctx context.Context, r *api.Resource, ns string, opts ListOptions) ([]api.Object, api.ListMeta, error) {
	var raw struct {
		Metadata api.ListMeta      `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	if err := c.doJSON(ctx, http.MethodGet, Path(r, ns, ""), opts.query(), nil, "", &raw); err != nil {
		return nil, api.ListMeta{}, err
	}
	items := make([]api.Object, 0, len(raw.Items))
	for _, it := range raw.Items {
		o := r.NewObject()
		if err := json.Unmarshal(it, o); err != nil {
			return nil, api.ListMeta{}, err
		}
		items = append(items, o)
	}
	return items, raw.Metadata, nil
}

// Create creates obj and refreshes it with what the server stored.
func (c *Client) Create(ctx context.Context, r *api.Resource, obj api.Object) error {
	return c.doJSON(ctx, http.MethodPost, Path(r, obj.GetObjectMeta().Namespace, ""), nil, obj, "", obj)
}

// Update replaces obj (compare-and-swap when it carries a resourceVersion).
func (c *Client) Update(ctx context.Context, r *api.Resource, obj api.Object) error {
	m := obj.GetObjectMeta()
	return c.doJSON(ctx, http.MethodPut, Path(r, m.Namespace, m.Name), nil, obj, "", obj)
}

// UpdateStatus replaces only obj's status.
func (c *Client) UpdateStatus(ctx context.Context, r *api.Resource, obj api.Object) error {
	m := obj.GetObjectMeta()
	return c.doJSON(ctx, http.MethodPut, Path(r, m.Namespace, m.Name, "status"), nil, obj, "", obj)
}

// Patch applies a JSON merge patch (RFC 7386).
func (c *Client) Patch(ctx context.Context, r *api.Resource, ns, name string, patch []byte) (api.Object, error) {
	obj := r.NewObject()
	return obj, c.doJSON(ctx, http.MethodPatch, Path(r, ns, name), nil, patch, "application/merge-patch+json", obj)
}

// Delete removes an object and returns it as it was.
func (c *Client) Delete(ctx context.Context, r *api.Resource, ns, name string) (api.Object, error) {
	obj := r.NewObject()
	return obj, c.doJSON(ctx, http.MethodDelete, Path(r, ns, name), nil, nil, "", obj)
}

// LoginResponse is what a login returns.
type LoginResponse struct {
	Token     string    `json:"token"`
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expiresAt"`
}

// Login exchanges a password for a token. It does not change the client's
// own token.
func (c *Client) Login(ctx context.Context, user, password string) (*LoginResponse, error) {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/oauth/token"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(user, password)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Slipway API at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, decodeStatus(resp)
	}
	var out LoginResponse
	return &out, json.NewDecoder(resp.Body).Decode(&out)
}

// Revoke invalidates the client's token.
func (c *Client) Revoke(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodPost, "/oauth/revoke", nil, nil, "", nil)
}

// RegistryHost asks the server where its integrated registry is.
func (c *Client) RegistryHost(ctx context.Context) (string, error) {
	var v struct {
		Registry string `json:"registry"`
	}
	if err := c.doJSON(ctx, http.MethodGet, "/version", nil, nil, "", &v); err != nil {
		return "", err
	}
	if v.Registry == "" {
		return "", errors.New("the server does not run a registry")
	}
	return v.Registry, nil
}

// Mirrors asks the server for the names of its registry's pull-through
// mirrors; none (nil) when it serves none.
func (c *Client) Mirrors(ctx context.Context) ([]string, error) {
	var v struct {
		Mirrors []string `json:"mirrors"`
	}
	if err := c.doJSON(ctx, http.MethodGet, "/version", nil, nil, "", &v); err != nil {
		return nil, err
	}
	return v.Mirrors, nil
}

// RevokeUserTokens ends every session of user (a user name) by deleting
// all its tokens, and says how many went. Cluster admins only.
func (c *Client) RevokeUserTokens(ctx context.Context, user string) (string, error) {
	var st api.Status
	err := c.doJSON(ctx, http.MethodPost, "/apis/"+api.Group+"/"+api.Version+"/users/"+url.PathEscape(user)+"/revoke-tokens", nil, struct{}{}, "application/json", &st)
	return st.Message, err
}

// WhoAmI returns the caller's user name and groups.
func (c *Client) WhoAmI(ctx context.Context) (*api.User, error) {
	var u api.User
	return &u, c.doJSON(ctx, http.MethodGet, "/apis/"+api.Group+"/"+api.Version+"/users/~", nil, nil, "", &u)
}

// CreateToken issues a token for a service account. ttl 0 is the server's
// default.
func (c *Client) CreateToken(ctx context.Context, project, sa string, ttl time.Duration) (*api.TokenRequest, error) {
	in := api.TokenRequest{Spec: api.TokenRequestSpec{ExpirationSeconds: int64(ttl / time.Second)}}
	var out api.TokenRequest
	return &out, c.doJSON(ctx, http.MethodPost, Path(api.ServiceAccounts, project, sa, "token"), nil, in, "", &out)
}

// Event is one watch event. Err is set on an ERROR event, which ends the
// stream; a 410 means "list again and watch from the list's
// resourceVersion".
type Event struct {
	Type   string
	Object api.Object
	Err    error
}

// Watch streams changes after resourceVersion rv ("" sends the current
// objects first). The channel closes when ctx ends or the stream breaks;
// Watch itself fails with a 410 Status when rv is too old.
func (c *Client) Watch(ctx context.Context, r *api.Resource, ns, rv string, opts ListOptions) (<-chan Event, error) {
	q := opts.query()
	q.Set("watch", "true")
	if rv != "" {
		q.Set("resourceVersion", rv)
	}
	u := *c.base
	u.Path = strings.TrimSuffix(c.base.Path, "/") + Path(r, ns, "")
	if unesc, err := url.PathUnescape(u.Path); err == nil && unesc != u.Path {
		u.RawPath, u.Path = u.Path, unesc
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	// Watches outlive the per-request timeout.
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Slipway API at %s: %w", c.base, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, decodeStatus(resp)
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 8<<20)
		for sc.Scan() {
			var line struct {
				Type   string          `json:"type"`
				Object json.RawMessage `json:"object"`
			}
			ev := Event{}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				ev = Event{Type: api.Error, Err: fmt.Errorf("client: bad watch line: %w", err)}
			} else if line.Type == api.Error {
				var st api.Status
				_ = json.Unmarshal(line.Object, &st)
				ev = Event{Type: api.Error, Err: &st}
			} else {
				obj := r.NewObject()
				if err := json.Unmarshal(line.Object, obj); err != nil {
					ev = Event{Type: api.Error, Err: err}
				} else {
					ev = Event{Type: line.Type, Object: obj}
				}
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
			if ev.Type == api.Error {
				return
			}
		}
	}()
	return out, nil
}
