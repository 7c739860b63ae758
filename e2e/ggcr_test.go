package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Pushes and pulls with go-containerregistry, the client library most
// Go tools (crane, ko, …) use: Basic credentials with a platform token as
// the password, which ggcr trades for a registry token.

func ggcrRef(t *testing.T, registry, repoTag string) name.Tag {
	t.Helper()
	ref, err := name.NewTag(registry+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func ggcrOpts(ctx context.Context, token string, extra ...remote.Option) []remote.Option {
	return append([]remote.Option{remote.WithAuth(&authn.Basic{Username: "x", Password: token}), remote.WithContext(ctx)}, extra...)
}

// ggcrVerify pulls ref and checks it is byte for byte img: the manifest's
// bytes and digest, the config, and every layer's digest and size as read
// back from the registry.
func ggcrVerify(ctx context.Context, ref name.Reference, img v1.Image, token string) error {
	opts := ggcrOpts(ctx, token)
	wantDigest, err := img.Digest()
	if err != nil {
		return err
	}
	wantManifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return fmt.Errorf("pulling %s: %w", ref, err)
	}
	if desc.Digest != wantDigest || !bytes.Equal(desc.Manifest, wantManifest) {
		return fmt.Errorf("%s: manifest %s (%d bytes), want the pushed %s (%d bytes)", ref, desc.Digest, len(desc.Manifest), wantDigest, len(wantManifest))
	}
	got, err := desc.Image()
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	gotCfg, err := got.RawConfigFile()
	if err != nil {
		return fmt.Errorf("%s: reading the config: %w", ref, err)
	}
	if wantCfg, _ := img.RawConfigFile(); !bytes.Equal(gotCfg, wantCfg) {
		return fmt.Errorf("%s: the config read back differs from the pushed one", ref)
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rl, err := remote.Layer(ref.Context().Digest(d.String()), opts...)
		if err != nil {
			return fmt.Errorf("%s: layer %s: %w", ref, d, err)
		}
		rc, err := rl.Compressed()
		if err != nil {
			return fmt.Errorf("%s: layer %s: %w", ref, d, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: reading layer %s back after %d bytes: %w", ref, d, n, err)
		}
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() || n != size {
			return fmt.Errorf("%s: layer %s read back as %d bytes with digest %s, want %d bytes", ref, d, n, got, size)
		}
	}
	return nil
}

// logIfDied registers a cleanup that, if the test failed and the server
// had exited by then, prints its output: a server that dies mid-test
// otherwise shows up only as "connection refused".
func logIfDied(t *testing.T, p *proc) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Logf("slipway start (data dir %s) exited during the test: %v\n%s", p.dataDir, err, p.out)
		default:
		}
	})
}
