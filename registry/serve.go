package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Distribution stores every blob and manifest under its sha256 digest; it
// verifies a sha512 upload but then reports and links sha256. Slipway
// serves sha512 at the edge: it records sha512 → sha256 in etcd (the map is
// content-addressed, so it is global; access is still decided by the
// repository's sha256 link) and translates paths and headers both ways.

func (r *Registry) sha512Key(d string) string {
	return r.cfg.Store.Prefix() + "digests/" + d
}

// sha512Lookup maps a sha512 digest to the sha256 digest it is stored as.
func (r *Registry) sha512Lookup(ctx context.Context, d string) (string, bool) {
	if !strings.HasPrefix(d, "sha512:") {
		return "", false
	}
	resp, err := r.cfg.Store.Client().Get(ctx, r.sha512Key(d))
	if err != nil || len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

func (r *Registry) sha512Record(ctx context.Context, d512, d256 string) error {
	_, err := r.cfg.Store.Client().Put(ctx, r.sha512Key(d512), d256)
	return err
}

// headerHook lets the edge rewrite response headers just before they go
// out, and change the status.
type headerHook struct {
	http.ResponseWriter
	hook  func(code int, h http.Header) int
	wrote bool
}

func (h *headerHook) WriteHeader(code int) {
	if !h.wrote {
		h.wrote = true
		code = h.hook(code, h.Header())
	}
	h.ResponseWriter.WriteHeader(code)
}

func (h *headerHook) Write(b []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	return h.ResponseWriter.Write(b)
}

func (h *headerHook) Flush() {
	if f, ok := h.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (h *headerHook) Unwrap() http.ResponseWriter { return h.ResponseWriter }

func replaceDigest(h http.Header, from, to string) {
	for _, k := range []string{"Docker-Content-Digest", "Location", "Etag"} {
		if v := h.Get(k); v != "" {
			h.Set(k, strings.ReplaceAll(v, from, to))
		}
	}
}

// serveApp hands the request to distribution, translating sha512.
func (r *Registry) serveApp(w http.ResponseWriter, req *http.Request, rt route) {
	ctx := req.Context()
	switch {
	case (rt.kind == "blobs" || rt.kind == "manifests") && strings.HasPrefix(rt.reference, "sha512:") && !(rt.kind == "manifests" && req.Method == http.MethodPut):
		d256, ok := r.sha512Lookup(ctx, rt.reference)
		if !ok {
			code, what := "BLOB_UNKNOWN", "blob"
			if rt.kind == "manifests" {
				code, what = "MANIFEST_UNKNOWN", "manifest"
			}
			ociErr(http.StatusNotFound, code, "%s %s is unknown to this registry", what, rt.reference).write(w)
			return
		}
		req.URL.Path = strings.Replace(req.URL.Path, rt.reference, d256, 1)
		req.URL.RawPath = ""
		w = &headerHook{ResponseWriter: w, hook: func(code int, h http.Header) int {
			replaceDigest(h, d256, rt.reference)
			return code
		}}
	case rt.kind == "manifests" && req.Method == http.MethodPut && strings.HasPrefix(rt.reference, "sha512:"):
		body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20+1))
		if err != nil || len(body) > 4<<20 {
			ociErr(http.StatusBadRequest, "MANIFEST_INVALID", "the manifest is unreadable or over 4 MiB").write(w)
			return
		}
		sum512 := sha512.Sum512(body)
		if "sha512:"+hex.EncodeToString(sum512[:]) != rt.reference {
			ociErr(http.StatusBadRequest, "DIGEST_INVALID", "the manifest's sha512 digest is not %s", rt.reference).write(w)
			return
		}
		sum256 := sha256.Sum256(body)
		d256 := "sha256:" + hex.EncodeToString(sum256[:])
		req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		req.URL.Path = strings.Replace(req.URL.Path, rt.reference, d256, 1)
		req.URL.RawPath = ""
		w = &headerHook{ResponseWriter: w, hook: func(code int, h http.Header) int {
			if code == http.StatusCreated {
				if err := r.sha512Record(ctx, rt.reference, d256); err != nil {
					return http.StatusInternalServerError
				}
			}
			replaceDigest(h, d256, rt.reference)
			return code
		}}
	case rt.kind == "uploads" && req.Method == http.MethodPut && strings.HasPrefix(req.URL.Query().Get("digest"), "sha512:"):
		d512 := req.URL.Query().Get("digest")
		if _, err := digest.Parse(d512); err != nil {
			ociErr(http.StatusBadRequest, "DIGEST_INVALID", "%q is not a digest", trunc(d512)).write(w)
			return
		}
		w = &headerHook{ResponseWriter: w, hook: func(code int, h http.Header) int {
			if code != http.StatusCreated {
				return code
			}
			d256 := h.Get("Docker-Content-Digest")
			if err := r.sha512Record(ctx, d512, d256); err != nil {
				return http.StatusInternalServerError
			}
			h.Set("Docker-Content-Digest", d512)
			h.Set("Location", "/v2/"+rt.name+"/blobs/"+d512)
			return code
		}}
	case rt.kind == "uploads" && req.Method == http.MethodPost && strings.HasPrefix(req.URL.Query().Get("mount"), "sha512:"):
		q := req.URL.Query()
		d512 := q.Get("mount")
		if d256, ok := r.sha512Lookup(ctx, d512); ok {
			q.Set("mount", d256)
			req.URL.RawQuery = q.Encode()
			req.Form = nil
			w = &headerHook{ResponseWriter: w, hook: func(code int, h http.Header) int {
				if code == http.StatusCreated {
					replaceDigest(h, d256, d512)
				}
				return code
			}}
		}
	}
	// distribution reads "from", "mount", "digest" and "_state" with
	// FormValue, which prefers a url-encoded request body to the query.
	// The edge decided on the query alone, so pin the form to it.
	req.Form = req.URL.Query()
	req.PostForm = url.Values{}
	// distribution adds its own, so the answer has one, as distribution's.
	delete(w.Header(), apiVersionHeader)
	r.app.ServeHTTP(w, req)
}
