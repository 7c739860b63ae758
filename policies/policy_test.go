package policies

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
)

// countingVerifier is a stand-in for the registry-backed verifier (which
// the signing package tests against the real registry and cosign CLI): it
// accepts refs listed in signed and counts calls, to show the cache.
type countingVerifier struct {
	signed map[string]bool
	calls  int
}

func (v *countingVerifier) VerifySignature(_ context.Context, ref string, keys [][]byte) (string, error) {
	v.calls++
	if v.signed[ref] {
		return "fp1", nil
	}
	return "", errors.New("no signature by the required keys")
}

func (v *countingVerifier) VerifyAttestation(_ context.Context, ref string, keys [][]byte, pt string) (string, error) {
	v.calls++
	if v.signed[ref] && pt == "https://slsa.dev/provenance/v1" {
		return "fp1", nil
	}
	return "", errors.New("no attestation")
}

type keyMap map[string]string

func (k keyMap) PublicKey(_ context.Context, e string) ([]byte, error) {
	if v, ok := k[e]; ok {
		return []byte(v), nil
	}
	return nil, errors.New("no such key")
}

func TestCheck(t *testing.T) {
	now := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	signed := "reg:5000/prod/app@sha256:aaa"
	v := &countingVerifier{signed: map[string]bool{signed: true}}
	c := &Checker{Verifier: v, Keys: keyMap{"prod/release": "PEM"}, Now: func() time.Time { return now }}
	pol := &api.ImagePolicy{ObjectMeta: api.ObjectMeta{Name: "p", Namespace: "prod", ResourceVersion: "1"}, Spec: api.ImagePolicySpec{
		RequireSignatures:   []string{"prod/release"},
		RequireAttestations: []string{"https://slsa.dev/provenance/v1"},
		MaxSeverity:         "HIGH",
		AllowedRegistries:   []string{"reg:5000"},
		Ignore:              []api.VulnerabilityIgnore{{ID: "CVE-2", Reason: "not reachable", Expires: now.Add(time.Hour)}, {ID: "CVE-3", Reason: "old", Expires: now.Add(-time.Hour)}},
	}}
	scan := func(ids ...string) *api.ImageScan {
		s := &api.ImageScan{ObjectMeta: api.ObjectMeta{Name: "sha256:aaa"}, Status: api.ImageScanStatus{Phase: "Scanned", DBVersion: "v1"}}
		for _, id := range ids {
			s.Status.Findings = append(s.Status.Findings, api.Finding{ID: id, Package: "openssl", Version: "1", Severity: "CRITICAL"})
		}
		return s
	}
	pols := []*api.ImagePolicy{pol}
	if d := c.Check(context.Background(), pols, signed, scan()); !d.Allowed {
		t.Fatalf("a signed, attested, clean image was refused: %s", d.Reason())
	}
	calls := v.calls
	if d := c.Check(context.Background(), pols, signed, scan()); !d.Allowed || v.calls != calls {
		t.Errorf("the second check verified again (%d calls, was %d); it should come from the cache", v.calls, calls)
	}
	if d := c.Check(context.Background(), pols, signed, scan("CVE-2")); !d.Allowed {
		t.Errorf("a critical finding covered by a VEX ignore was refused: %s", d.Reason())
	}
	if d := c.Check(context.Background(), pols, signed, scan("CVE-3")); d.Allowed || !strings.Contains(d.Reason(), "CRITICAL CVE-3 in openssl") {
		t.Errorf("a critical finding under an expired ignore: allowed=%v reason=%q", d.Allowed, d.Reason())
	}
	if d := c.Check(context.Background(), pols, signed, nil); d.Allowed || !strings.Contains(d.Reason(), "no scan") {
		t.Errorf("an unscanned image: allowed=%v reason=%q", d.Allowed, d.Reason())
	}
	unsigned := "reg:5000/prod/app@sha256:bbb"
	if d := c.Check(context.Background(), pols, unsigned, scan()); d.Allowed || !strings.Contains(d.Reason(), "requireSignatures: no signature") {
		t.Errorf("an unsigned image: allowed=%v reason=%q", d.Allowed, d.Reason())
	}
	if d := c.Check(context.Background(), pols, "evil.example/prod/app@sha256:aaa", scan()); d.Allowed || !strings.Contains(d.Reason(), "not in reg:5000") {
		t.Errorf("an image from another registry: allowed=%v reason=%q", d.Allowed, d.Reason())
	}
	if d := c.Check(context.Background(), pols, "reg:5000/prod/app:latest", scan()); d.Allowed {
		t.Error("a tag reference was allowed; checks are by digest")
	}
	if d := c.Check(context.Background(), nil, unsigned, nil); !d.Allowed {
		t.Error("a project without policies refused an image")
	}
}

// M1: a scan made while no vulnerability database was loaded has no
// findings because nothing was matched, not because there are none:
// maxSeverity refuses it and says how to load a database. Failed scans
// are refused with their reason.
func TestMaxSeverityFailsClosedWithoutDatabase(t *testing.T) {
	c := &Checker{}
	pols := []*api.ImagePolicy{{ObjectMeta: api.ObjectMeta{Name: "p", Namespace: "prod"}, Spec: api.ImagePolicySpec{MaxSeverity: "HIGH"}}}
	ref := "reg:5000/prod/app@sha256:aaa"
	for _, tc := range []struct {
		name   string
		status api.ImageScanStatus
		want   string
	}{
		{"scanned without a database", api.ImageScanStatus{Phase: "Scanned", Packages: 3}, "slipway vulndb import"},
		{"failed", api.ImageScanStatus{Phase: "Failed", Message: "scan: image too large: link target over 4096 bytes"}, "link target over 4096 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &api.ImageScan{ObjectMeta: api.ObjectMeta{Name: "sha256:aaa"}, Status: tc.status}
			if d := c.Check(context.Background(), pols, ref, sc); d.Allowed || !strings.Contains(d.Reason(), tc.want) {
				t.Errorf("allowed=%v reason=%q; want a refusal that says %q", d.Allowed, d.Reason(), tc.want)
			}
		})
	}
}
