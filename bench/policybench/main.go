// Command policybench measures the policy check of one image — a valid
// cosign signature by a project's key, and a scan within maxSeverity —
// against the stock cosign CLI verifying the same signature, and prints a
// Markdown table for BENCHMARKS.md:
//
//   - cold: a new policies.Checker per check (nothing cached), so each
//     check resolves the key through the server's keyring, issues and
//     revokes a short-lived pull token as the server's verifier does, and
//     verifies the signature against the integrated registry over HTTP;
//   - verify only: signing.Verify with a pull token issued once: the
//     registry's token flow and reads and the ECDSA check, without the
//     pull token's etcd writes;
//   - warm: Checker.Check after a first call, the path the node agent
//     takes for an image verified before (the signature result is cached
//     per digest and policy version; the scan is read fresh);
//   - warm admission: what the node agent's Admit does per pod — list the
//     project's ImagePolicies and read the image's ImageScan from etcd —
//     plus the warm check;
//   - cosign: `bin/cosign verify --key cosign.pub --insecure-ignore-tlog
//     --allow-insecure-registry REF` on the same image (a process start,
//     the token flow and the same registry reads).
//
// Everything runs in this process against an in-process server (embedded
// etcd, the API over HTTPS and the registry on loopback): the image is
// pushed, the server makes the project's key pair and signs the image
// through `POST signingkeys/default/sign`, as `slipway sign` does.
//
//	make build && go run ./bench/policybench [-warm 10000] [-cold 30] [-cosign-runs 5]
package main

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/client"
	"slipway.dev/slipway/policies"
	"slipway.dev/slipway/server"
	"slipway.dev/slipway/signing"
	"slipway.dev/slipway/store"
)

const project = "bench"

func main() {
	warmN := flag.Int("warm", 10000, "warm checks (each timed)")
	coldN := flag.Int("cold", 30, "cold checks, each with a new Checker")
	cosignRuns := flag.Int("cosign-runs", 5, "runs of cosign verify (the median is shown)")
	cosignBin := flag.String("cosign", "bin/cosign", "the cosign binary (make build makes it)")
	flag.Parse()
	log.SetFlags(0)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err := run(*warmN, *coldN, *cosignRuns, *cosignBin); err != nil {
		log.Fatal("policybench: ", err)
	}
}

func run(warmN, coldN, cosignRuns int, cosignBin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cosignBin, err := filepath.Abs(cosignBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(cosignBin); err != nil {
		return fmt.Errorf("%s: %w (run make build)", cosignBin, err)
	}
	dir, err := os.MkdirTemp("", "policybench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := server.Start(ctx, server.Config{
		DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", RegistryListen: "127.0.0.1:0",
		Buildkitd: "none", Out: io.Discard, Node: server.NodeConfig{Disabled: true},
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	cl, err := srv.AdminClient(ctx)
	if err != nil {
		return err
	}

	// A project with a key the server makes, a signed image and its scan.
	if err := cl.Create(ctx, api.Projects, &api.Project{ObjectMeta: api.ObjectMeta{Name: project}}); err != nil {
		return err
	}
	if err := cl.Create(ctx, api.SigningKeys, &api.SigningKey{ObjectMeta: api.ObjectMeta{Name: "default", Namespace: project}}); err != nil {
		return err
	}
	var pub string
	if err := poll(ctx, "the key pair", func() (bool, error) {
		o, err := cl.Get(ctx, api.SigningKeys, project, "default")
		if err != nil {
			return false, err
		}
		pub = o.(*api.SigningKey).PublicKey
		return pub != "", nil
	}); err != nil {
		return err
	}
	img, err := random.Image(4096, 2)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(srv.RegistryHost+"/"+project+"/app:1", name.Insecure)
	if err != nil {
		return err
	}
	adminAuth := &authn.Basic{Username: "admin", Password: cl.Token()}
	if err := remote.Write(tag, img, remote.WithAuth(adminAuth), remote.WithContext(ctx)); err != nil {
		return err
	}
	h, _ := img.Digest()
	ref := tag.Context().Digest(h.String())
	resp, err := cl.Do(ctx, "POST", client.Path(api.SigningKeys, project, "default", "sign"), nil, fmt.Appendf(nil, `{"image":%q}`, ref.String()), "application/json")
	if err != nil {
		return fmt.Errorf("signing %s: %w", ref, err)
	}
	resp.Body.Close()
	var scan *api.ImageScan
	if err := poll(ctx, "the scan", func() (bool, error) {
		o, err := cl.Get(ctx, api.ImageScans, project, h.String())
		if err != nil {
			return false, nil
		}
		scan = o.(*api.ImageScan)
		return scan.Status.Phase == "Scanned", nil
	}); err != nil {
		return err
	}
	pol := &api.ImagePolicy{
		ObjectMeta: api.ObjectMeta{Name: "gate", Namespace: project},
		Spec:       api.ImagePolicySpec{RequireSignatures: []string{project + "/default"}, MaxSeverity: "HIGH"},
	}
	if err := cl.Create(ctx, api.ImagePolicies, pol); err != nil {
		return err
	}
	o, err := cl.Get(ctx, api.ImagePolicies, project, "gate")
	if err != nil {
		return err
	}
	pols := []*api.ImagePolicy{o.(*api.ImagePolicy)}
	newChecker := func() *policies.Checker {
		return srv.NewPolicyChecker()
	}
	check := func(c *policies.Checker) error {
		if d := c.Check(ctx, pols, ref.String(), scan); !d.Allowed {
			return fmt.Errorf("the policy refuses %s: %s", ref, d.Reason())
		}
		return nil
	}

	// Cold: nothing cached.
	var cold []time.Duration
	for range coldN {
		c := newChecker()
		start := time.Now()
		if err := check(c); err != nil {
			return err
		}
		cold = append(cold, time.Since(start))
	}

	// Verify only: the registry reads and the signature check.
	secret, _, err := srv.API.Authenticator().IssueServiceAccountToken(ctx, project, server.PullerServiceAccount, 10*time.Minute)
	if err != nil {
		return err
	}
	var verifyOnly []time.Duration
	for range coldN {
		start := time.Now()
		if _, err := signing.Verify(ctx, ref, [][]byte{[]byte(pub)}, signing.WithAuth(&authn.Basic{Username: server.PullerServiceAccount, Password: secret})); err != nil {
			return err
		}
		verifyOnly = append(verifyOnly, time.Since(start))
	}

	// Warm: one Checker, after its first check.
	c := newChecker()
	if err := check(c); err != nil {
		return err
	}
	warm := make([]time.Duration, 0, warmN)
	for range warmN {
		start := time.Now()
		if err := check(c); err != nil {
			return err
		}
		warm = append(warm, time.Since(start))
	}

	// Warm admission: Admit's reads from etcd, then the warm check.
	admitN := min(warmN, 2000)
	admit := make([]time.Duration, 0, admitN)
	for range admitN {
		start := time.Now()
		items, _, err := srv.Store.List(ctx, api.ImagePolicies, project, store.ListOptions{})
		if err != nil {
			return err
		}
		ps := make([]*api.ImagePolicy, 0, len(items))
		for _, o := range items {
			ps = append(ps, o.(*api.ImagePolicy))
		}
		so, err := srv.Store.Get(ctx, api.ImageScans, project, h.String())
		if err != nil {
			return err
		}
		if d := c.Check(ctx, ps, ref.String(), so.(*api.ImageScan)); !d.Allowed {
			return fmt.Errorf("admission refuses %s: %s", ref, d.Reason())
		}
		admit = append(admit, time.Since(start))
	}

	// cosign verify on the same image.
	cdir := filepath.Join(dir, "cosign")
	if err := os.MkdirAll(filepath.Join(cdir, "docker"), 0o700); err != nil {
		return err
	}
	basic := base64.StdEncoding.EncodeToString([]byte("admin:" + cl.Token()))
	if err := os.WriteFile(filepath.Join(cdir, "docker", "config.json"), fmt.Appendf(nil, `{"auths":{%q:{"auth":%q}}}`, srv.RegistryHost, basic), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(cdir, "cosign.pub"), []byte(pub), 0o600); err != nil {
		return err
	}
	var cosign []time.Duration
	for range cosignRuns {
		cmd := exec.CommandContext(ctx, cosignBin, "verify", "--key", "cosign.pub", "--insecure-ignore-tlog", "--allow-insecure-registry", ref.String())
		cmd.Dir = cdir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + cdir, "DOCKER_CONFIG=" + filepath.Join(cdir, "docker"), "TUF_ROOT=" + filepath.Join(cdir, "tuf")}
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("cosign verify: %v\n%s", err, out)
		}
		cosign = append(cosign, time.Since(start))
	}

	ms := func(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }
	cosignMed := pct(cosign, 50)
	fmt.Printf("Policy check of one signed, scanned image (%s), %s; %d cold, %d warm, %d admission, %d cosign runs.\n\n",
		ref.DigestStr()[:19]+"…", time.Now().UTC().Format("2006-01-02"), coldN, warmN, admitN, cosignRuns)
	fmt.Println("| measurement | p50 (ms) | p99 (ms) | cosign verify p50 ÷ this |")
	fmt.Println("|---|---|---|---|")
	row := func(what string, ds []time.Duration) {
		fmt.Printf("| %s | %s | %s | %.0f× |\n", what, ms(pct(ds, 50)), ms(pct(ds, 99)), float64(cosignMed)/float64(pct(ds, 50)))
	}
	row("warm Checker.Check (cached signature result)", warm)
	row("warm admission (etcd: list policies, get scan; then Check)", admit)
	row("cold Checker.Check (keyring, token issue + revoke, registry, ECDSA)", cold)
	row("signing.Verify alone (registry token flow and reads + ECDSA; pull token issued once)", verifyOnly)
	row("`cosign verify` (process, token flow, registry, ECDSA)", cosign)
	goal := "met"
	if pct(warm, 50) >= 10*time.Millisecond {
		goal = "NOT met"
	}
	fmt.Printf("\nGoal warm < 10 ms: %s (p50 %s ms).\n", goal, ms(pct(warm, 50)))
	return nil
}

func poll(ctx context.Context, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(time.Minute)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within a minute", what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pct is the p-th percentile (nearest rank).
func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}
