//go:build rawclient

package registry_test

// With -tags rawclient the registry tests push and pull through this small
// raw client instead of go-containerregistry (client_ggcr_test.go), to tell
// a registry bug from a client quirk.

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func (h *harness) client() ociClient { return rawClient{} }

// rawClient does what docker does: ping /v2/, follow the Bearer challenge
// to the token endpoint with Basic credentials, then upload each blob that
// is missing and PUT the manifest, with the registry JWT.
type rawClient struct{}

// splitRef splits "repo:tag" or "repo@digest".
func splitRef(ref string) (repo, id string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i+1:]
	}
	i := strings.LastIndex(ref, ":")
	if i < 0 || strings.Contains(ref[i:], "/") {
		return ref, "latest"
	}
	return ref[:i], ref[i+1:]
}

// parseChallenge reads `Bearer realm="…",service="…",scope="…"`.
func parseChallenge(h string) (map[string]string, bool) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, false
	}
	out := map[string]string{}
	for rest != "" {
		k, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.TrimSpace(strings.TrimPrefix(k, ","))
		var v string
		if strings.HasPrefix(after, `"`) {
			end := strings.Index(after[1:], `"`)
			if end < 0 {
				return nil, false
			}
			v, rest = after[1:end+1], after[end+2:]
		} else {
			v, rest, _ = strings.Cut(after, ",")
		}
		out[k] = v
	}
	return out, out["realm"] != ""
}

// login runs the token flow for scope and returns the JWT.
func (rawClient) login(t *testing.T, h *harness, u, scope string) (string, error) {
	t.Helper()
	r := h.do(t, req{method: http.MethodGet, path: "/v2/"})
	if r.code != http.StatusUnauthorized {
		return "", fmt.Errorf("ping /v2/: got %v, want a 401 challenge", r)
	}
	ch, ok := parseChallenge(r.header.Get("WWW-Authenticate"))
	if !ok {
		return "", fmt.Errorf("ping /v2/: no Bearer challenge in %q", r.header.Get("WWW-Authenticate"))
	}
	q := url.Values{"service": {ch["service"]}, "scope": {scope}}
	r = h.do(t, req{method: http.MethodGet, path: ch["realm"] + "?" + q.Encode(), user: u})
	if r.code != http.StatusOK {
		return "", fmt.Errorf("token: %v", r)
	}
	return jsonField(r.body, "token"), nil
}

func (c rawClient) push(t *testing.T, h *harness, u, ref string, img v1.Image) (int, error) {
	t.Helper()
	repo, id := splitRef(ref)
	tok, err := c.login(t, h, u, "repository:"+repo+":pull,push")
	if err != nil {
		return 0, err
	}
	type blob struct {
		digest string
		data   []byte
	}
	var blobs []blob
	cfg, err := img.RawConfigFile()
	if err != nil {
		return 0, err
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		return 0, err
	}
	blobs = append(blobs, blob{cfgName.String(), cfg})
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return 0, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return 0, err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return 0, err
		}
		blobs = append(blobs, blob{d.String(), data})
	}
	for _, b := range blobs {
		r := h.do(t, req{method: http.MethodHead, path: "/v2/" + repo + "/blobs/" + b.digest, bearer: tok})
		if r.code == http.StatusOK {
			continue
		}
		r = h.do(t, req{method: http.MethodPost, path: "/v2/" + repo + "/blobs/uploads/", bearer: tok})
		if r.code != http.StatusAccepted {
			return 0, fmt.Errorf("POST /v2/%s/blobs/uploads/: %d %s: %v", repo, r.code, r.errCode(), r)
		}
		r = h.do(t, req{method: http.MethodPut, path: h.next(t, r.header.Get("Location"), url.Values{"digest": {b.digest}}), bearer: tok,
			header: http.Header{"Content-Type": {"application/octet-stream"}}, body: b.data})
		if r.code != http.StatusCreated {
			return 0, fmt.Errorf("PUT blob %s: %d %s: %v", b.digest, r.code, r.errCode(), r)
		}
	}
	mt, err := img.MediaType()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	r := h.do(t, req{method: http.MethodPut, path: "/v2/" + repo + "/manifests/" + id, bearer: tok,
		header: http.Header{"Content-Type": {string(mt)}}, body: raw})
	if r.code != http.StatusCreated {
		return r.code, fmt.Errorf("PUT manifest %s: %d %s: %v", ref, r.code, r.errCode(), r)
	}
	return r.code, nil
}

func (c rawClient) pull(t *testing.T, h *harness, u, ref string) ([]byte, string, error) {
	t.Helper()
	repo, id := splitRef(ref)
	tok, err := c.login(t, h, u, "repository:"+repo+":pull")
	if err != nil {
		return nil, "", err
	}
	r := h.do(t, req{method: http.MethodGet, path: "/v2/" + repo + "/manifests/" + id, bearer: tok, header: http.Header{"Accept": {manifestAccept}}})
	if r.code != http.StatusOK {
		return nil, "", fmt.Errorf("GET manifest %s: %d %s: %v", ref, r.code, r.errCode(), r)
	}
	d := r.header.Get("Docker-Content-Digest")
	if got := sha256Of(r.body); strings.HasPrefix(id, "sha256:") && got != id {
		return nil, "", fmt.Errorf("GET manifest %s: body digest %s", ref, got)
	}
	if got := sha256Of(r.body); d != "" && got != d {
		return nil, "", fmt.Errorf("GET manifest %s: body digest %s, header %s", ref, got, d)
	}
	return r.body, sha256Of(r.body), nil
}
