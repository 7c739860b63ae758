package runtime

import (
	"errors"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/uuid"
)

// H2: the engine's image cache is shared by every project on the node,
// so a cached image is no proof that a pod may pull it. With credentials
// EnsureImage always pulls; without, only the name the image was pulled
// as counts, not its ID or its digest under another name.
func TestEnsureImageRechecksPullRights(t *testing.T) {
	_, auth := busybox(t)
	r := newRuntime(t, "pullrights", t.TempDir())
	ctx := testCtx(t)

	private := regHost + "/victim/app:" + uuid.NewString()
	if err := push(private); err != nil {
		t.Fatal(err)
	}
	if err := r.EnsureImage(ctx, private, auth); err != nil {
		t.Fatalf("EnsureImage(%s) with the victim's credentials = %v", private, err)
	}
	img, err := r.cli.ImageInspect(ctx, private)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.RepoDigests) == 0 {
		t.Fatalf("%s has no repo digest after the pull: %+v", private, img)
	}
	byDigest := img.RepoDigests[0]
	d, err := name.NewDigest(byDigest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ref, auth string
		wantErr         bool
	}{
		{"H2 cached image, another project's (wrong) credentials", private, pullAuth(regUser, "wrong"), true},
		// Not checked here: the same NAME@DIGEST with wrong credentials.
		// Docker 20.10 answers it from its manifest cache without asking
		// the registry, so the server decides that pull (server.pullAuth).
		{"H2 cached image by digest, no credentials", byDigest, "", false}, // the name it was pulled as
		{"H2 cached image by its ID, no credentials", img.ID, "", true},
		{"H2 cached digest under another name, no credentials", regHost + "/attacker/app@" + d.DigestStr(), "", true},
		{"H2 cached digest under another name, credentials", regHost + "/attacker/app@" + d.DigestStr(), auth, true},
		{"cached image, right credentials (pulled again)", private, auth, false},
	} {
		err := r.EnsureImage(ctx, tc.ref, tc.auth)
		if tc.wantErr && !errors.Is(err, ErrImagePull) {
			t.Errorf("%s: EnsureImage(%s) = %v, want ErrImagePull", tc.name, tc.ref, err)
		}
		if !tc.wantErr && err != nil {
			t.Errorf("%s: EnsureImage(%s) = %v, want nil", tc.name, tc.ref, err)
		}
	}
}

func TestRefKey(t *testing.T) {
	const dg = "sha256:0123456789012345678901234567890123456789012345678901234567890123"
	for _, tc := range []struct{ a, b string }{
		{"busybox", "docker.io/library/busybox:latest"},
		{"reg:5000/p/app@" + dg, "reg:5000/p/app:v1@" + dg},
	} {
		ka, okA := refKey(tc.a)
		kb, okB := refKey(tc.b)
		if !okA || !okB || ka != kb {
			t.Errorf("refKey(%q) = %q, %v; refKey(%q) = %q, %v; want the same", tc.a, ka, okA, tc.b, kb, okB)
		}
	}
	if k, ok := refKey(dg); ok {
		t.Errorf("refKey(%q) = %q, true; want false (an image ID is not a name)", dg, k)
	}
	if a, _ := refKey("reg/p/app:1"); a == "reg/q/app:1" {
		t.Errorf("refKey names two projects' repositories alike: %q", a)
	}
}
