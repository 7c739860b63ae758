//go:build !rawclient

package registry_test

// The registry tests push and pull with go-containerregistry's remote
// package, as users' tools do; -tags rawclient swaps in the small raw
// client of client_raw_test.go.

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func (h *harness) client() ociClient { return ggcrClient{} }

type ggcrClient struct{}

// putRecorder notes the status of the last manifest PUT.
type putRecorder struct {
	mu     sync.Mutex
	status int
}

func (r *putRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := remote.DefaultTransport.RoundTrip(req)
	if err == nil && req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/") {
		r.mu.Lock()
		r.status = res.StatusCode
		r.mu.Unlock()
	}
	return res, err
}

func ggcrAuth(t *testing.T, h *harness, u string) authn.Authenticator {
	if u == "" {
		return authn.Anonymous
	}
	return &authn.Basic{Username: "x", Password: h.token(t, u)}
}

func (ggcrClient) push(t *testing.T, h *harness, u, ref string, img v1.Image) (int, error) {
	t.Helper()
	rec := &putRecorder{}
	err := remote.Write(h.ref(t, ref), img,
		remote.WithAuth(ggcrAuth(t, h, u)),
		remote.WithContext(ctxT(t)),
		remote.WithTransport(rec),
		// Report the first failure: the tests count pushes that fail.
		remote.WithRetryStatusCodes(),
		remote.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Steps: 1}))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.status, err
}

func (ggcrClient) pull(t *testing.T, h *harness, u, ref string) ([]byte, string, error) {
	t.Helper()
	d, err := remote.Get(h.ref(t, ref), remote.WithAuth(ggcrAuth(t, h, u)), remote.WithContext(ctxT(t)))
	if err != nil {
		return nil, "", err
	}
	return d.Manifest, d.Digest.String(), nil
}
