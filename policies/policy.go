// Package policies decides whether an image may enter a project: at
// promotion, and when a pod of the project starts. A project's
// ImagePolicies are declarative rules (signatures by listed keys, the
// highest severity allowed after the project's VEX ignores, required
// attestations, allowed registries); every decision lists each rule with
// the evidence it used. Verified results are cached per digest, so a
// check at deploy costs a map lookup once an image has been verified.
package policies

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"slipway.dev/slipway/api"
)

// Verifier checks signatures and attestations in the registry. ref is
// REGISTRY/PROJECT/STREAM@DIGEST; keys are PEM public keys. It returns
// the fingerprint of the key that verified, or why none did.
type Verifier interface {
	VerifySignature(ctx context.Context, ref string, keys [][]byte) (string, error)
	VerifyAttestation(ctx context.Context, ref string, keys [][]byte, predicateType string) (string, error)
}

// Keys resolves a policy's key entries (PROJECT/NAME of a SigningKey, or a
// PEM public key) to PEM public keys.
type Keys interface {
	PublicKey(ctx context.Context, entry string) ([]byte, error)
}

// Decision is the outcome of checking one image against one project's
// policies.
type Decision struct {
	Allowed bool
	Checks  []api.PolicyCheck
	// Cached says the result came from the cache.
	Cached bool
}

// Reason is the first failed check, for status messages.
func (d Decision) Reason() string {
	var failed []string
	for _, c := range d.Checks {
		if !c.Passed {
			failed = append(failed, c.Rule+": "+c.Message)
		}
	}
	return strings.Join(failed, "; ")
}

// Checker evaluates policies. Safe for concurrent use.
type Checker struct {
	Verifier Verifier
	Keys     Keys
	// TTL bounds how long a verified result is reused. Default 10 minutes.
	TTL time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	d  Decision
	at time.Time
}

func (c *Checker) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Check decides whether the image ref (REGISTRY/PROJECT/STREAM@DIGEST) may
// enter a project with these policies, given its scan (nil if none).
// Signature and attestation results are cached per digest and policy
// version; scans are read fresh, as findings change with the database.
func (c *Checker) Check(ctx context.Context, policies []*api.ImagePolicy, ref string, scan *api.ImageScan) Decision {
	d := Decision{Allowed: true}
	if len(policies) == 0 {
		d.Checks = append(d.Checks, api.PolicyCheck{Rule: "policy", Passed: true, Message: "the project has no image policy"})
		return d
	}
	at := strings.LastIndex(ref, "@")
	if at < 0 {
		d.Allowed = false
		d.Checks = append(d.Checks, api.PolicyCheck{Rule: "digest", Message: "images are checked by digest; " + ref + " is a tag"})
		return d
	}
	for _, p := range policies {
		for _, chk := range c.checkOne(ctx, p, ref, scan) {
			d.Checks = append(d.Checks, chk)
			if !chk.Passed {
				d.Allowed = false
			}
		}
	}
	return d
}

func (c *Checker) checkOne(ctx context.Context, p *api.ImagePolicy, ref string, scan *api.ImageScan) []api.PolicyCheck {
	var out []api.PolicyCheck
	name := p.Namespace + "/" + p.Name
	if regs := p.Spec.AllowedRegistries; len(regs) > 0 {
		host, _, _ := strings.Cut(ref, "/")
		ok := slices.Contains(regs, host)
		out = append(out, api.PolicyCheck{Rule: name + ": allowedRegistries", Passed: ok,
			Message:  map[bool]string{true: "registry " + host + " is allowed", false: "registry " + host + " is not in " + strings.Join(regs, ", ")}[ok],
			Evidence: ref})
	}
	if len(p.Spec.RequireSignatures) > 0 || len(p.Spec.RequireAttestations) > 0 {
		out = append(out, c.trustChecks(ctx, p, ref)...)
	}
	if p.Spec.MaxSeverity != "" {
		out = append(out, severityCheck(name, p, scan, c.now()))
	}
	return out
}

// trustChecks verifies signatures and attestations, with the cache.
func (c *Checker) trustChecks(ctx context.Context, p *api.ImagePolicy, ref string) []api.PolicyCheck {
	key := ref + "|" + p.Namespace + "/" + p.Name + "@" + p.ResourceVersion
	ttl := c.TTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	c.mu.Lock()
	if e, ok := c.cache[key]; ok && c.now().Sub(e.at) < ttl {
		c.mu.Unlock()
		return e.d.Checks
	}
	c.mu.Unlock()
	name := p.Namespace + "/" + p.Name
	var keys [][]byte
	var out []api.PolicyCheck
	for _, entry := range p.Spec.RequireSignatures {
		k, err := c.Keys.PublicKey(ctx, entry)
		if err != nil {
			out = append(out, api.PolicyCheck{Rule: name + ": requireSignatures", Message: fmt.Sprintf("key %s: %v", short(entry), err)})
			continue
		}
		keys = append(keys, k)
	}
	allPassed := true
	if len(p.Spec.RequireSignatures) > 0 {
		chk := api.PolicyCheck{Rule: name + ": requireSignatures", Evidence: ref}
		if len(keys) == 0 {
			chk.Message = "none of the listed keys could be read"
		} else if fp, err := c.Verifier.VerifySignature(ctx, ref, keys); err != nil {
			chk.Message = err.Error()
		} else {
			chk.Passed, chk.Message = true, "signed by key "+fp
		}
		allPassed = allPassed && chk.Passed
		out = append(out, chk)
	}
	for _, pt := range p.Spec.RequireAttestations {
		chk := api.PolicyCheck{Rule: name + ": requireAttestations", Evidence: ref}
		if fp, err := c.Verifier.VerifyAttestation(ctx, ref, keys, pt); err != nil {
			chk.Message = fmt.Sprintf("%s: %v", pt, err)
		} else {
			chk.Passed, chk.Message = true, fmt.Sprintf("%s attestation signed by key %s", pt, fp)
		}
		allPassed = allPassed && chk.Passed
		out = append(out, chk)
	}
	if allPassed {
		// Only successes are cached: a signature added a moment later
		// must count at once.
		c.mu.Lock()
		if c.cache == nil {
			c.cache = map[string]cached{}
		}
		c.cache[key] = cached{d: Decision{Checks: out}, at: c.now()}
		c.mu.Unlock()
	}
	return out
}

// severityCheck compares the scan's worst finding not covered by the
// project's VEX ignores with the policy's maximum.
func severityCheck(name string, p *api.ImagePolicy, scan *api.ImageScan, now time.Time) api.PolicyCheck {
	chk := api.PolicyCheck{Rule: name + ": maxSeverity " + p.Spec.MaxSeverity}
	switch {
	case scan == nil || scan.Status.Phase == "":
		chk.Message = "the image has no scan yet; findings are unknown"
		return chk
	case scan.Status.Phase != "Scanned":
		chk.Message = "the image's scan " + strings.ToLower(scan.Status.Phase) + "; findings are unknown"
		if scan.Status.Message != "" {
			chk.Message += ": " + scan.Status.Message
		}
		return chk
	case scan.Status.DBVersion == "":
		// No database means unknown findings, never none: fail closed.
		chk.Evidence = "scan " + scan.Name + " without a vulnerability database"
		chk.Message = "findings are unknown: the image was scanned while no vulnerability database was loaded; a cluster admin imports one with `slipway vulndb import FILE.zip` and stored scans are matched again"
		return chk
	}
	chk.Evidence = fmt.Sprintf("scan %s with database %s", scan.Name, scan.Status.DBVersion)
	max := api.SeverityRank(p.Spec.MaxSeverity)
	var over []string
	for _, f := range scan.Status.Findings {
		if api.SeverityRank(f.Severity) <= max {
			continue
		}
		if ig := Ignored(p.Spec.Ignore, f, now); ig != nil {
			continue
		}
		over = append(over, fmt.Sprintf("%s %s in %s %s", f.Severity, f.ID, f.Package, f.Version))
	}
	if len(over) > 0 {
		chk.Message = strings.Join(over, ", ")
		return chk
	}
	chk.Passed, chk.Message = true, "no finding above "+p.Spec.MaxSeverity+" (after the project's ignores)"
	return chk
}

// Ignored returns the VEX entry that covers f at now, or nil. Expired
// entries cover nothing.
func Ignored(ignores []api.VulnerabilityIgnore, f api.Finding, now time.Time) *api.VulnerabilityIgnore {
	for i, ig := range ignores {
		if !now.Before(ig.Expires) {
			continue
		}
		if ig.ID != f.ID && !slices.Contains(f.Aliases, ig.ID) {
			continue
		}
		if ig.Package != "" && ig.Package != f.Package {
			continue
		}
		return &ignores[i]
	}
	return nil
}

func short(entry string) string {
	if strings.Contains(entry, "BEGIN") {
		sum := sha256.Sum256([]byte(entry))
		return "pem:" + hex.EncodeToString(sum[:6])
	}
	return entry
}
