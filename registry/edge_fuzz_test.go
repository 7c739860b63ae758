package registry

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker/auth"
	"golang.org/x/net/http/httpguts"
)

// Fuzz targets for what the registry's edge parses from the wire: the
// route (repository names, tags and digests) and the challenge it answers.
//
//	go test -run='^$' -fuzz=FuzzParseRoute -fuzztime=20s ./registry/

var routeSeeds = []string{
	"/v2/", "/v2", "/v2/_catalog", "/v2/p/s/manifests/latest", "/v2/p/s/manifests/sha256:" + strings.Repeat("a", 64),
	"/v2/p/a/b/c/blobs/sha256:" + strings.Repeat("0", 64), "/v2/p/s/blobs/uploads/", "/v2/p/s/blobs/uploads",
	"/v2/p/s/blobs/uploads/0b6f-4c", "/v2/p/s/tags/list", "/v2/p/s/referrers/sha512:" + strings.Repeat("1", 128),
	"/v2/p/manifests/x", "/v2/p/s/manifests/..", "/v2/p/s/manifests/a:b", "/v2/P/s/tags/list", "/v2/p//s/tags/list",
	"/v2/p/s%2Fx/tags/list", "/v2/p/s/manifests/md5:abc", "/v2/p/s/blobs/uploads/../../x", "/v2/p/manifests/manifests/manifests/t",
	"/v2/p-q/s__t/manifests/_x", "/v2/p/s/tags/list/x",
}

// FuzzParseRoute: no panic; every accepted route names a valid repository
// and a valid reference for its kind, and rebuilding the path from the
// route gives the input back; every refusal is a 400 or 404 with a code.
func FuzzParseRoute(f *testing.F) {
	for _, s := range routeSeeds {
		f.Add(s)
	}
	kinds := map[string]string{"manifests": "/manifests/", "blobs": "/blobs/", "referrers": "/referrers/", "tags": "/tags/list", "uploads": "/blobs/uploads/"}
	f.Fuzz(func(t *testing.T, path string) {
		rt, oe := parseRoute(path)
		if oe != nil {
			if (oe.status != http.StatusBadRequest && oe.status != http.StatusNotFound) || oe.code == "" {
				t.Fatalf("parseRoute(%q) = error %d %q, want 400 or 404 with a code", path, oe.status, oe.code)
			}
			return
		}
		switch rt.kind {
		case "base", "catalog":
			if rt.name != "" || rt.reference != "" {
				t.Fatalf("parseRoute(%q) = %+v, want no name for %s", path, rt, rt.kind)
			}
			return
		}
		if e := checkName(rt.name); e != nil {
			t.Fatalf("parseRoute(%q) accepted name %q that checkName refuses: %v", path, rt.name, e)
		}
		if strings.Contains(rt.name, "..") || strings.Contains(rt.name, "%") || strings.Contains(rt.name, "//") {
			t.Fatalf("parseRoute(%q) accepted name %q", path, rt.name)
		}
		seg, ok := kinds[rt.kind]
		if !ok {
			t.Fatalf("parseRoute(%q) = unknown kind %q", path, rt.kind)
		}
		switch rt.kind {
		case "manifests":
			if !tagRe.MatchString(rt.reference) && !digestRe.MatchString(rt.reference) {
				t.Fatalf("parseRoute(%q) accepted reference %q", path, rt.reference)
			}
		case "blobs", "referrers":
			if !digestRe.MatchString(rt.reference) {
				t.Fatalf("parseRoute(%q) accepted digest %q", path, rt.reference)
			}
		case "tags":
			if rt.reference != "" {
				t.Fatalf("parseRoute(%q) = tags with reference %q", path, rt.reference)
			}
		}
		if rt.kind == "manifests" || rt.kind == "blobs" || rt.kind == "referrers" {
			if alg, _, ok := strings.Cut(rt.reference, ":"); ok && alg != "sha256" && alg != "sha512" {
				t.Fatalf("parseRoute(%q) accepted algorithm %q", path, alg)
			}
		}
		back := "/v2/" + rt.name + seg + rt.reference
		if rt.kind == "uploads" && !strings.HasSuffix(path, "/") && rt.reference == "" {
			back = strings.TrimSuffix(back, "/")
		}
		if back != path {
			t.Fatalf("parseRoute(%q) = %+v, which rebuilds as %q", path, rt, back)
		}
	})
}

// FuzzChallenge: the 401 challenge for any request that reaches it parses,
// in containerd's parser (BuildKit's), to exactly the realm, service and
// scope the registry meant: a hostile "from" cannot add or change a
// parameter, or break the header.
func FuzzChallenge(f *testing.F) {
	for _, s := range routeSeeds {
		f.Add(s, "", "127.0.0.1:5000")
	}
	f.Add("/v2/p/s/blobs/uploads/", "q/r", "reg.example.com")
	f.Add("/v2/p/s/blobs/uploads/", `q/r",scope="repository:victim/app:push`, "h")
	f.Add("/v2/p/s/blobs/uploads/", "q/r\u00e9\\", "h")
	f.Add("/v2/p/s/blobs/uploads/", "a b", "h:1")
	r := &Registry{cfg: Config{Service: "slipway-registry"}}
	token := regexp.MustCompile(`^[a-z]+$`)
	f.Fuzz(func(t *testing.T, path, from, host string) {
		rt, oe := parseRoute(path)
		if oe != nil || !httpguts.ValidHostHeader(host) {
			return // net/http refuses such a Host before the registry sees it
		}
		req := httptest.NewRequest(http.MethodPost, "http://h/", nil)
		req.URL.Path, req.URL.RawQuery, req.Host = path, url.Values{"from": {from}}.Encode(), host
		w := httptest.NewRecorder()
		r.challenge(w, req, rt, "insufficient_scope", "authentication required")
		h := w.Header().Values("WWW-Authenticate")
		if len(h) != 1 || strings.ContainsAny(h[0], "\r\n") {
			t.Fatalf("challenge headers %q, want one line", h)
		}
		cs := auth.ParseAuthHeader(w.Header())
		if len(cs) != 1 || cs[0].Scheme != auth.BearerAuth {
			t.Fatalf("challenge %q parses as %+v, want one Bearer challenge", h[0], cs)
		}
		want := map[string]string{"realm": r.realm(req), "service": "slipway-registry", "error": "insufficient_scope"}
		if s := scopeFor(rt, req); s != "" {
			want["scope"] = s
		}
		got := cs[0].Parameters
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("challenge %q: %s = %q, want %q", h[0], k, got[k], v)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok || !token.MatchString(k) {
				t.Fatalf("challenge %q has parameter %q the registry did not mean", h[0], k)
			}
		}
	})
}
