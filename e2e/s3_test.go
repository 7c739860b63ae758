package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/credentials"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/s3"
)

// s3Server is a real S3-compatible object store for a test: SeaweedFS's
// `weed server` (master, volume, filer and S3 gateway in one process) on
// loopback ports, with its data in a temporary directory and one bucket
// made for the test.
type s3Server struct {
	Endpoint  string // http://127.0.0.1:port
	Bucket    string
	AccessKey string
	SecretKey string
	Region    string
	// Dir is SeaweedFS's data directory; Log is its output.
	Dir string
	Log *syncBuffer
	cmd *exec.Cmd
}

// weedBinary returns the repository's bin/weed, building it from the
// module pinned in hack/weed if `make build` has not.
func weedBinary(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("../bin/weed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		out, err := exec.Command("go", "build", "-C", "../hack/weed", "-o", p, "github.com/seaweedfs/seaweedfs/weed").CombinedOutput()
		if err != nil {
			t.Fatalf("building weed: %v\n%s", err, out)
		}
	}
	return p
}

// startS3 starts SeaweedFS with an S3 gateway that accepts one access key
// and returns it with an empty bucket. The server is stopped when the
// test ends.
func startS3(t *testing.T) *s3Server {
	t.Helper()
	dir := t.TempDir()
	s := &s3Server{Bucket: "slipway", AccessKey: "slipwaytest", SecretKey: "slipway-test-secret-key", Region: "us-east-1", Dir: dir, Log: &syncBuffer{}}
	identities := fmt.Sprintf(`{"identities": [{"name": "slipway", "credentials": [{"accessKey": %q, "secretKey": %q}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}`, s.AccessKey, s.SecretKey)
	config := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(config, []byte(identities), 0o600); err != nil {
		t.Fatal(err)
	}
	var grpcPorts []string
	port := func() string {
		_, p, _ := net.SplitHostPort(freePort(t))
		return p
	}
	grpcPort := func() string {
		p := port()
		grpcPorts = append(grpcPorts, p)
		return p
	}
	s3Port := port()
	s.Endpoint = "http://127.0.0.1:" + s3Port
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	// Every port is given (the gRPC ones default to port+10000, which may
	// be taken), and the S3 gateway's Iceberg and Lance catalogs, on fixed
	// ports by default, are off, and so is the master's usage report to
	// SeaweedFS's telemetry server: the tests talk to loopback only.
	args := []string{"server", "-dir", data, "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1",
		"-master.port", port(), "-master.port.grpc", grpcPort(), "-master.volumeSizeLimitMB", "64", "-master.telemetry=false",
		"-volume.port", port(), "-volume.port.grpc", grpcPort(), "-volume.max", "20", "-volume.preStopSeconds", "0",
		"-filer", "-filer.port", port(), "-filer.port.grpc", grpcPort(),
		"-s3", "-s3.port", s3Port, "-s3.port.grpc", grpcPort(), "-s3.config", config,
		"-s3.port.iceberg", "0", "-s3.port.lance", "0"}
	cmd := exec.Command(weedBinary(t), args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = s.Log, s.Log
	// Its own process group, so that a test's kill -9 of a slipway
	// process never reaches it, and cleanup takes all of it down; killed
	// with the test process if that dies first (a test timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		// Its graceful stop can hang on the S3 gateway's filer
		// subscriptions; nothing in its data outlives the test.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		// Each gRPC server also listens on a Unix socket in /tmp.
		for _, p := range grpcPorts {
			for _, role := range []string{"master", "volume", "filer", "s3"} {
				_ = os.Remove(fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%s.sock", role, p))
			}
		}
		if t.Failed() {
			t.Logf("SeaweedFS output (last 4 KiB):\n%s", tail(s.Log.String(), 4096))
		}
	})

	// Ready when the bucket exists and an object can be written, read
	// and deleted: the gateway answers before the filer and the volume
	// server have found the master.
	cl := s.client(t)
	probe := []byte("probe")
	deadline := time.Now().Add(90 * time.Second)
	var err error
	for {
		select {
		case err := <-done:
			t.Fatalf("weed server exited early: %v\n%s", err, tail(s.Log.String(), 4096))
		default:
		}
		err = s.probe(cl, probe)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SeaweedFS S3 gateway at %s not ready after 90s: %v\n%s", s.Endpoint, err, tail(s.Log.String(), 4096))
		}
		time.Sleep(250 * time.Millisecond)
	}
	return s
}

func (s *s3Server) probe(cl *s3.S3, body []byte) error {
	if _, err := cl.HeadBucket(&s3.HeadBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
		if _, err := cl.CreateBucket(&s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}); err != nil {
			return fmt.Errorf("create bucket: %w", err)
		}
	}
	key := aws.String(".ready-probe")
	if _, err := cl.PutObject(&s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: key, Body: bytes.NewReader(body)}); err != nil {
		return fmt.Errorf("put: %w", err)
	}
	out, err := cl.GetObject(&s3.GetObjectInput{Bucket: aws.String(s.Bucket), Key: key})
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	var got bytes.Buffer
	_, err = got.ReadFrom(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(got.Bytes(), body) {
		return fmt.Errorf("get: %q, %v", got.Bytes(), err)
	}
	_, err = cl.DeleteObject(&s3.DeleteObjectInput{Bucket: aws.String(s.Bucket), Key: key})
	return err
}

// client is an S3 client for the server, as the test's own eyes on the
// bucket.
func (s *s3Server) client(t *testing.T) *s3.S3 {
	t.Helper()
	sess, err := session.NewSession(&aws.Config{
		Endpoint:         aws.String(s.Endpoint),
		Region:           aws.String(s.Region),
		Credentials:      credentials.NewStaticCredentials(s.AccessKey, s.SecretKey, ""),
		S3ForcePathStyle: aws.Bool(true),
		DisableSSL:       aws.Bool(true),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s3.New(sess)
}

// keys lists the bucket's object keys under prefix.
func (s *s3Server) keys(t *testing.T, prefix string) []string {
	t.Helper()
	var keys []string
	err := s.client(t).ListObjectsV2Pages(&s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket), Prefix: aws.String(prefix)},
		func(p *s3.ListObjectsV2Output, _ bool) bool {
			for _, o := range p.Contents {
				keys = append(keys, *o.Key)
			}
			return true
		})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// storageFile writes a --registry-storage file that puts the registry in
// the bucket under rootdirectory root, and returns its path.
func (s *s3Server) storageFile(t *testing.T, root string) string {
	t.Helper()
	y := fmt.Sprintf(`s3:
  regionendpoint: %s
  region: %s
  bucket: %s
  accesskey: %s
  secretkey: %s
  forcepathstyle: true
  secure: false
  rootdirectory: %s
`, s.Endpoint, s.Region, s.Bucket, s.AccessKey, s.SecretKey, root)
	p := filepath.Join(t.TempDir(), "storage.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// TestS3ServerStarts checks the helper on its own: the bucket takes an
// object and lists it back.
func TestS3ServerStarts(t *testing.T) {
	s := startS3(t)
	cl := s.client(t)
	if _, err := cl.PutObject(&s3.PutObjectInput{Bucket: aws.String(s.Bucket), Key: aws.String("a/b"), Body: strings.NewReader("x")}); err != nil {
		t.Fatal(err)
	}
	if got := s.keys(t, "a/"); len(got) != 1 || got[0] != "a/b" {
		t.Fatalf("keys under a/ = %q, want [a/b]", got)
	}
}
