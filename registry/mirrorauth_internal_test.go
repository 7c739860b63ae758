package registry

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// TestCredentialScope: a request carrying credentials goes to the
// upstream, and to the token service once the upstream has named it,
// and nowhere else; requests without credentials go anywhere the guard
// underneath lets them.
func TestCredentialScope(t *testing.T) {
	var heard int
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { heard++ }))
	defer other.Close()
	realm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"token":"t"}`)) }))
	defer realm.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm.URL+`/token",service="up"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer up.Close()
	host := strings.TrimPrefix(up.URL, "http://")
	cs := newCredentialScope(http.DefaultTransport, host, true)
	do := func(url string, auth bool) error {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if auth {
			req.SetBasicAuth("u", "p")
		}
		resp, err := cs.RoundTrip(req)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := do(realm.URL+"/token", true); !errors.Is(err, errCredentialScope) {
		t.Fatalf("credentials to the token service before the upstream named it = %v; want refused", err)
	}
	if err := do(up.URL+"/v2/", true); err != nil {
		t.Fatalf("credentials to the upstream: %v", err)
	}
	if err := do(realm.URL+"/token", true); err != nil {
		t.Fatalf("credentials to the token service the upstream named: %v", err)
	}
	if err := do(other.URL+"/blob", true); !errors.Is(err, errCredentialScope) || heard != 0 {
		t.Fatalf("credentials to another host = %v (it heard %d requests); want refused, unheard", err, heard)
	}
	if err := do(other.URL+"/blob", false); err != nil || heard != 1 {
		t.Fatalf("a request without credentials to another host = %v; want sent", err)
	}

	// Over HTTPS, a token service over plain HTTP is never learnt.
	cs = newCredentialScope(http.DefaultTransport, host, false)
	if cs.mayCarry(mustURL(t, up.URL)) {
		t.Fatalf("credentials over plain HTTP to an https upstream's host allowed")
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
