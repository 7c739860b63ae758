package builders

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport/client"

	"slipway.dev/slipway/api"
)

// TestCloneOnlyHTTP: clone refuses other transports even when the API
// let one through (objects stored before validation), and go-git keeps
// only http and https.
func TestCloneOnlyHTTP(t *testing.T) {
	guardGit(http.DefaultTransport)
	for _, scheme := range []string{"file", "ssh", "git"} {
		if _, ok := client.Protocols[scheme]; ok {
			t.Errorf("go-git still has the %s transport", scheme)
		}
	}
	for _, uri := range []string{"file:///etc", t.TempDir(), "ssh://git@127.0.0.1/x", "git://127.0.0.1/x", "git@github.com:org/x.git"} {
		_, err := clone(context.Background(), &api.GitBuildSource{URI: uri}, t.TempDir(), nil)
		if err == nil || !strings.Contains(err.Error(), "http(s)") {
			t.Errorf("clone(%s) = %v, want a refusal naming http(s)", uri, err)
		}
	}
	_, err := clone(context.Background(), &api.GitBuildSource{URI: "http://bob:s3cret@127.0.0.1:9/x.git"}, t.TempDir(), nil)
	if err == nil || strings.Contains(err.Error(), "s3cret") {
		t.Errorf("clone with credentials = %v; want an error without the password", err)
	}
}
