package registry

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// L8: special-purpose ranges, and the IPv6 forms that carry an internal
// IPv4 address, are internal.
func TestInternalAddr(t *testing.T) {
	cases := map[string]bool{
		"0.1.2.3": true, "0.0.0.0": true, "127.0.0.1": true, "10.1.2.3": true, "100.64.0.1": true,
		"169.254.169.254": true, "192.0.0.8": true, "192.0.2.1": true, "198.18.0.1": true, "198.19.255.255": true,
		"203.0.113.9": true, "240.0.0.1": true, "255.255.255.255": true, "224.0.0.1": true,
		"::1": true, "::": true, "fe80::1": true, "fc00::1": true, "ff02::1": true, "2001:db8::1": true, "100::1": true,
		"::ffff:10.0.0.1": true, "64:ff9b::a00:1": true, "64:ff9b::7f00:1": true, "64:ff9b:1::a9fe:a9fe": true,
		"2002:a00:1::1": true, "2002:7f00:1::": true, "::10.0.0.1": true,
		"2001:0:4136:e378:8000:63bf:f5ff:fffe": true, // Teredo, client 10.0.0.1
		// Public.
		"8.8.8.8": false, "1.1.1.1": false, "198.20.0.1": false, "2606:4700::1111": false,
		"64:ff9b::808:808": false, "2002:808:808::1": false, "::ffff:8.8.8.8": false,
	}
	for s, want := range cases {
		if got := internalAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("internalAddr(%s) = %v, want %v", s, got, want)
		}
	}
	// An allowed CIDR still wins.
	p := ImportPolicy{CIDRs: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}}
	if !p.addrAllowed(netip.MustParseAddr("198.18.0.1")) {
		t.Errorf("addrAllowed(198.18.0.1) with 198.18.0.0/15 allowed = false, want true")
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// L2: tokens with unknown kids reread the key directory only when the kid
// could be a rotation elsewhere, and at most once per missReloadEvery.
func TestKeyReloadOnUnknownKid(t *testing.T) {
	ks, err := loadKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeClock{t: time.Now()}
	ks.now = c.now
	ks.loaded = c.now()
	cur, _ := kidTime(ks.cur)
	newer := "k" + itoa(cur+1)
	for _, tc := range []struct {
		kid  string
		want bool
	}{
		{"", false},
		{"random", false},
		{strings.Repeat("k1", 100), false},
		{"k0000000000000000001", false}, // older than ours
		{"k" + itoa(c.now().Add(time.Hour).UnixNano()), false}, // from the future
		{"k-5", false}, {"k+5", false},
		{newer, true},
		{newer, false}, // again within a second
	} {
		if got := ks.mayReload(tc.kid); got != tc.want {
			t.Errorf("mayReload(%.30q) = %v, want %v", tc.kid, got, tc.want)
		}
	}
	c.add(missReloadEvery)
	if !ks.mayReload(newer) {
		t.Errorf("mayReload(newer kid) a second later = false, want true")
	}
	// With keys over a minute old, any kid of our form may reload once.
	c.add(2 * time.Minute)
	if !ks.mayReload("k0000000000000000001") {
		t.Errorf("mayReload(old kid) with stale keys = false, want true")
	}
	// Oversized tokens are refused before parsing.
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"pad": strings.Repeat("x", maxTokenLen)})
	tok.Header["kid"] = ks.cur
	raw, err := tok.SignedString(ks.keys[ks.cur])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ks.verify(raw, "slipway-registry"); err == nil {
		t.Errorf("verify(a %d-byte token) = nil error, want refused", len(raw))
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// L7: the platform's readers fetch only from the registry itself.
func TestRegistryOnlyTransport(t *testing.T) {
	var hit []string
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		hit = append(hit, r.URL.Host)
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Request: r}, nil
	})
	tr := RegistryOnlyTransport("127.0.0.1:5000", base)
	for _, u := range []string{"http://127.0.0.1:5000/v2/", "https://store.example.com/x", "http://127.0.0.1:2379/version", "http://127.0.0.1/v2/"} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		if want := strings.HasPrefix(u, "http://127.0.0.1:5000/"); (err == nil) != want {
			t.Errorf("RoundTrip(%s) = %v, want allowed %v", u, err, want)
		}
	}
	if len(hit) != 1 {
		t.Errorf("requests that reached the network: %v, want only the registry", hit)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
