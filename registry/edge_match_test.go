package registry

import (
	"net/http"
	"strings"
	"testing"

	"slipway.dev/slipway/api"
)

// checkNameByGrammar is checkName as it was written with the regular
// expressions and api.ValidateStreamName: the oracle for the matchers.
func checkNameByGrammar(name string) *ociError {
	if name == "" || len(name) > 255 {
		return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository name must be 1-255 characters")
	}
	parts := strings.Split(name, "/")
	if len(parts) < 2 {
		return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository %q has no project: use PROJECT/NAME", trunc(name))
	}
	for _, p := range parts {
		if !nameComponent.MatchString(p) {
			return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository %q: each part must be lower-case letters and digits separated by '.', '_', '__' or '-'", trunc(name))
		}
	}
	if len(api.ValidateStreamName(strings.Join(parts[1:], "/"))) > 0 || len(parts[0]) > 63 {
		return ociErr(http.StatusBadRequest, "NAME_INVALID", "repository %q is not PROJECT/STREAM with a valid project", trunc(name))
	}
	return nil
}

// sameAsGrammar fails unless every matcher agrees with its regular
// expression on s.
func sameAsGrammar(t *testing.T, s string) {
	t.Helper()
	if got, want := isComponent(s), nameComponent.MatchString(s); got != want {
		t.Errorf("isComponent(%q) = %v, want %v", s, got, want)
	}
	if got, want := isTag(s), tagRe.MatchString(s); got != want {
		t.Errorf("isTag(%q) = %v, want %v", s, got, want)
	}
	if got, want := isDigest(s), digestRe.MatchString(s); got != want {
		t.Errorf("isDigest(%q) = %v, want %v", s, got, want)
	}
	got, want := checkName(s), checkNameByGrammar(s)
	if (got == nil) != (want == nil) || (got != nil && *got != *want) {
		t.Errorf("checkName(%q) = %v, want %v", s, got, want)
	}
}

// TestMatchersAreTheGrammar: on every string of up to 5 characters over
// an alphabet with each character class the grammar tells apart, and on
// strings at each length limit, the matchers answer as the grammar does.
func TestMatchersAreTheGrammar(t *testing.T) {
	const alphabet = "aZ0._-+:=/"
	var walk func(prefix string, n int)
	walk = func(prefix string, n int) {
		sameAsGrammar(t, prefix)
		if n == 0 || t.Failed() {
			return
		}
		for i := range len(alphabet) {
			walk(prefix+alphabet[i:i+1], n-1)
		}
	}
	walk("", 5)
	for _, s := range []string{
		strings.Repeat("a", 128), strings.Repeat("a", 129), "_" + strings.Repeat("A", 127), "-" + strings.Repeat("a", 10),
		strings.Repeat("p", 63) + "/s", strings.Repeat("p", 64) + "/s", "p/" + strings.Repeat("s", 200), "p/" + strings.Repeat("s", 201),
		"p/" + strings.Repeat("s/", 100) + "s", strings.Repeat("a/", 127) + "a", strings.Repeat("a/", 128),
		"sha256:" + strings.Repeat("f", 64), "sha512:" + strings.Repeat("0", 128), "a+b.c_d-e:x=_-Y", "a..b:x", "a:", ":x",
		"p/s__t", "p/s___t", "p/s---t", "p/s._t", "p/.s", "p/s.", "p/s-", "p/-s",
	} {
		sameAsGrammar(t, s)
	}
}

// FuzzMatchers: the matchers and the grammar agree on any string.
//
//	go test -run='^$' -fuzz=FuzzMatchers -fuzztime=30s ./registry/
func FuzzMatchers(f *testing.F) {
	for _, s := range append(routeSeeds, "p/s", "a__b", "sha256:abc", "A_b.c-d") {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { sameAsGrammar(t, s) })
}
