package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
)

// s3Root is where the registry tests keep their storage in the bucket.
const s3Root = "/slipway"

// s3Blob is the object key of blob d under s3Root.
func s3Blob(d string) string {
	alg, hx, _ := strings.Cut(d, ":")
	return strings.TrimPrefix(s3Root, "/") + "/docker/registry/v2/blobs/" + alg + "/" + hx[:2] + "/" + hx + "/data"
}

// imageDigests is every digest img stores: manifest, config, layers.
func imageDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	md, _ := img.Digest()
	cd, _ := img.ConfigName()
	out := []string{md.String(), cd.String()}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		out = append(out, d.String())
	}
	return out
}

// s3Registry is an all-in-one and a second `slipway registry` replica
// sharing one bucket of a real S3 server (and the data dir's token keys
// and HTTP secret).
type s3Registry struct {
	s3       *s3Server
	p        *proc
	storage  string
	etcd     string
	replica  *role
	registry string // the replica's host:port
}

func startS3Registry(t *testing.T) *s3Registry {
	t.Helper()
	s := startS3(t)
	storage := s.storageFile(t, s3Root)
	dir := t.TempDir()
	p := startServer(t, dir, freePort(t), "--registry-storage", storage)
	logIfDied(t, p)
	var etcdAddrs struct{ Client string }
	data, err := os.ReadFile(filepath.Join(dir, "etcd.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &etcdAddrs); err != nil {
		t.Fatal(err)
	}
	r := &s3Registry{s3: s, p: p, storage: storage, etcd: "https://" + etcdAddrs.Client, registry: freePort(t)}
	r.startReplica(t)
	return r
}

// startReplica starts the second registry and waits until it answers.
func (r *s3Registry) startReplica(t *testing.T) {
	t.Helper()
	r.replica = startRole(t, "registry", "--data-dir", r.p.dataDir, "--registry-listen", r.registry,
		"--etcd-endpoints", r.etcd, "--registry-storage", r.storage)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if r.replica.exited() {
			t.Fatalf("slipway registry exited:\n%s", r.replica.out)
		}
		resp, err := http.Get("http://" + r.registry + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slipway registry not answering after 60s: %v\n%s", err, r.replica.out)
		}
	}
}

// TestRegistryOnS3 runs the registry on a real S3 server (SeaweedFS) through
// distribution's s3 driver, with two replicas sharing the bucket: images
// pushed by go-containerregistry and docker through either replica pull
// back byte for byte through both, their bytes are objects in the bucket
// and nothing lands on the local disk, a deleted image's blobs are taken
// from the bucket by the garbage collector, and a replica killed -9 in the
// middle of a push loses nothing that was acknowledged.
func TestRegistryOnS3(t *testing.T) {
	r := startS3Registry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := cli{t: t, config: filepath.Join(t.TempDir(), "config")}
	c.ok("login", r.p.url(), "-u", "admin", "-p", r.p.adminPassword(t), "--certificate-authority", r.p.caFile())
	c.ok("new-project", "objs")
	token := strings.TrimSpace(c.ok("whoami", "-t"))
	regs := []string{r.p.registry, r.registry}

	// go-containerregistry, one image through each replica.
	imgs := map[string]v1.Image{}
	for i, reg := range regs {
		img, err := random.Image(256<<10, 3)
		if err != nil {
			t.Fatal(err)
		}
		tag := "objs/app:v" + string(rune('1'+i))
		if err := remote.Write(ggcrRef(t, reg, tag), img, ggcrOpts(ctx, token)...); err != nil {
			t.Fatalf("push %s through %s: %v\n%s", tag, reg, err, r.replica.out)
		}
		imgs[tag] = img
	}
	verifyAll := func(what string) {
		t.Helper()
		for tag, img := range imgs {
			for _, reg := range regs {
				if err := ggcrVerify(ctx, ggcrRef(t, reg, tag), img, token); err != nil {
					t.Errorf("%s: %v", what, err)
				}
			}
		}
	}
	// A tag into another repository: Slipway links the blobs there
	// itself, server-side, through the driver.
	if out := c.ok("tag", "objs/app:v2", "objs/copy:1"); !strings.Contains(out, "Tag objs/copy:1 set to") {
		t.Errorf("slipway tag objs/app:v2 objs/copy:1 printed %q", out)
	}
	imgs["objs/copy:1"] = imgs["objs/app:v2"]
	verifyAll("after the pushes")
	// The bytes are objects in the bucket, and the local disk holds none.
	keys := map[string]bool{}
	for _, k := range r.s3.keys(t, strings.TrimPrefix(s3Root, "/")+"/") {
		keys[k] = true
	}
	for tag, img := range imgs {
		for _, d := range imageDigests(t, img) {
			if !keys[s3Blob(d)] {
				t.Errorf("%s: blob %s is not in the bucket as %s", tag, d, s3Blob(d))
			}
		}
	}
	if local, err := filepath.Glob(filepath.Join(r.p.dataDir, "registry", "storage", "*")); err != nil || len(local) > 0 {
		t.Errorf("the registry wrote to the local disk with S3 storage: %v %v", local, err)
	}

	// docker pushes through the replica; the all-in-one serves what it
	// pushed, and docker pulls it back through the all-in-one.
	dk := newDockerCLI(t)
	dk.login(r.registry, "admin", token)
	dk.login(r.p.registry, "admin", token)
	src := r.registry + "/objs/docker:1"
	dk.ok("tag", baseImage(t), src)
	dk.ok("push", "-q", src)
	pushed := strings.TrimSpace(dk.ok("inspect", "--format", "{{index .RepoDigests 0}}", src))
	_, dockerDigest, _ := strings.Cut(pushed, "@")
	desc, err := remote.Get(ggcrRef(t, r.p.registry, "objs/docker:1"), ggcrOpts(ctx, token)...)
	if err != nil || desc.Digest.String() != dockerDigest {
		t.Fatalf("the all-in-one serves objs/docker:1 as %v (%v), want %s as docker pushed it through the replica", desc, err, dockerDigest)
	}
	back := r.p.registry + "/objs/docker@" + dockerDigest
	dk.ok("pull", "-q", back)

	// Deleted through one replica, gone from the other; the collector
	// then takes its blobs out of the bucket and leaves the others.
	gone := imgs["objs/app:v1"]
	md, _ := gone.Digest()
	delRef, _ := name.NewDigest(r.registry+"/objs/app@"+md.String(), name.Insecure)
	if err := remote.Delete(delRef, ggcrOpts(ctx, token)...); err != nil {
		t.Fatalf("delete objs/app@%s: %v", md, err)
	}
	delete(imgs, "objs/app:v1")
	getRef, _ := name.NewDigest(r.p.registry+"/objs/app@"+md.String(), name.Insecure)
	var te *transport.Error
	if _, err := remote.Get(getRef, ggcrOpts(ctx, token)...); !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		t.Errorf("objs/app@%s after its deletion through the replica: %v, want 404 from the all-in-one", md, err)
	}
	time.Sleep(1100 * time.Millisecond) // past the grace period below
	var rep registry.GCReport
	if err := json.Unmarshal([]byte(c.ok("adm", "gc", "--gc-grace", "1s", "-o", "json")), &rep); err != nil {
		t.Fatal(err)
	}
	freed := map[string]bool{}
	for _, b := range rep.Deleted {
		freed[b.Digest] = true
	}
	// Its config and layers, that is: the manifest's own bytes stay
	// while a referrer names it as its subject (the scanner stores an
	// SBOM for every image it sees).
	for _, d := range imageDigests(t, gone)[1:] {
		if !freed[d] {
			t.Errorf("gc did not delete blob %s of the deleted image; report %+v", d, rep)
		}
		if ks := r.s3.keys(t, s3Blob(d)); len(ks) > 0 {
			t.Errorf("blob %s of the deleted image is still in the bucket after gc: %q", d, ks)
		}
	}
	verifyAll("after gc")

	// kill -9 of the replica while it receives a layer: what was
	// acknowledged before stays whole, through the survivor and through
	// the replica restarted; the interrupted image pushes again cleanly.
	big, err := random.Image(8<<20, 2)
	if err != nil {
		t.Fatal(err)
	}
	midUpload := make(chan struct{})
	var once sync.Once
	rt := &stallingTransport{base: http.DefaultTransport, after: 1 << 20, reached: func() { once.Do(func() { close(midUpload) }) }}
	pushErr := make(chan error, 1)
	pushCtx, cancelPush := context.WithCancel(ctx)
	defer cancelPush()
	go func() {
		pushErr <- remote.Write(ggcrRef(t, r.registry, "objs/big:1"), big, ggcrOpts(pushCtx, token, remote.WithTransport(rt))...)
	}()
	select {
	case <-midUpload:
	case err := <-pushErr:
		t.Fatalf("the push ended before the replica received 1 MiB of a layer: %v", err)
	}
	_ = r.replica.cmd.Process.Signal(syscall.SIGKILL)
	<-r.replica.done
	r.replica.done <- nil
	cancelPush() // the client would retry the dead replica for a while
	if err := <-pushErr; err == nil {
		t.Fatal("the push through the killed replica succeeded")
	}
	verifyOn := func(what string, regs ...string) {
		t.Helper()
		for tag, img := range imgs {
			for _, reg := range regs {
				if err := ggcrVerify(ctx, ggcrRef(t, reg, tag), img, token); err != nil {
					t.Errorf("%s: %v", what, err)
				}
			}
		}
	}
	verifyOn("after the replica was killed", r.p.registry)
	if _, err := remote.Get(ggcrRef(t, r.p.registry, "objs/big:1"), ggcrOpts(ctx, token)...); !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
		t.Errorf("objs/big:1, whose push was cut off, is served: %v; want 404", err)
	}
	r.startReplica(t)
	if err := remote.Write(ggcrRef(t, r.registry, "objs/big:1"), big, ggcrOpts(ctx, token)...); err != nil {
		t.Fatalf("pushing objs/big:1 again through the restarted replica: %v", err)
	}
	imgs["objs/big:1"] = big
	verifyOn("after the replica restarted", regs...)

	// Deleting project objs removes its repositories from the bucket
	// (a delete by key prefix) and leaves objs2's, whose keys share the
	// prefix "objs".
	c.ok("new-project", "objs2")
	other, err := random.Image(1024, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ggcrRef(t, r.registry, "objs2/keep:1"), other, ggcrOpts(ctx, token)...); err != nil {
		t.Fatal(err)
	}
	if _, err := r.p.admin(t).Delete(ctx, api.Projects, "", "objs"); err != nil {
		t.Fatal(err)
	}
	repos := strings.TrimPrefix(s3Root, "/") + "/docker/registry/v2/repositories/"
	waitFor(t, 2*time.Minute, "project objs's repositories to leave the bucket", func() (bool, string) {
		left := r.s3.keys(t, repos+"objs/")
		return len(left) == 0, fmt.Sprintf("%d keys left, such as %q", len(left), left[:min(len(left), 3)])
	})
	if len(r.s3.keys(t, repos+"objs2/")) == 0 {
		t.Errorf("deleting project objs removed objs2's repositories from the bucket")
	}
	if err := ggcrVerify(ctx, ggcrRef(t, r.p.registry, "objs2/keep:1"), other, token); err != nil {
		t.Errorf("after project objs was deleted: %v", err)
	}
}

// stallingTransport lets the first upload body larger than after through until after bytes
// of it were sent, then calls reached and holds that body open: the server
// sees an upload in progress until the test kills it. Other requests pass.
type stallingTransport struct {
	base    http.RoundTripper
	after   int64
	reached func()
	once    sync.Once
}

func (s *stallingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && (req.Method == http.MethodPatch || req.Method == http.MethodPut) && (req.ContentLength < 0 || req.ContentLength > s.after) {
		s.once.Do(func() {
			req = req.Clone(req.Context())
			req.Body = &stallingBody{rc: req.Body, left: s.after, reached: s.reached, closed: make(chan struct{}), ctx: req.Context()}
		})
	}
	return s.base.RoundTrip(req)
}

type stallingBody struct {
	rc      io.ReadCloser
	left    int64
	reached func()
	closed  chan struct{}
	ctx     context.Context
	once    sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		b.reached()
		select { // until the transport or the test gives up on the request
		case <-b.closed:
		case <-b.ctx.Done():
		}
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *stallingBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return b.rc.Close()
}

// TestRegistryS3BadStorage: a bucket that does not exist, or a secret key
// the server refuses, stops `slipway start` with the reason and what to
// check, instead of a registry that fails every push.
func TestRegistryS3BadStorage(t *testing.T) {
	s := startS3(t)
	noBucket, badKey := *s, *s
	noBucket.Bucket = "no-such-bucket"
	badKey.SecretKey = "not-the-secret-key"
	for what, bad := range map[string]*s3Server{"NoSuchBucket": &noBucket, "SignatureDoesNotMatch": &badKey} {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, binary(t), "start", "--data-dir", t.TempDir(), "--listen", freePort(t),
			"--registry-listen", freePort(t), "--registry-storage", bad.storageFile(t, s3Root), "--log-level", "warn")
		out, err := cmd.CombinedOutput()
		hung := ctx.Err() != nil
		cancel()
		if err == nil || hung {
			t.Errorf("slipway start on storage failing with %s: %v, want it to exit with an error\n%s", what, err, out)
			continue
		}
		if !strings.Contains(string(out), what) || !strings.Contains(string(out), "check --registry-storage") {
			t.Errorf("slipway start on storage failing with %s printed:\n%s\nwant the reason and what to check", what, out)
		}
	}
}
