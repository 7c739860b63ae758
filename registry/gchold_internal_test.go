package registry

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/etcd"
)

func holdRegistry(t *testing.T) (*Registry, *clientv3.Client) {
	t.Helper()
	member, err := etcd.Start(etcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { member.Close() })
	cli, err := etcd.Client(member.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return &Registry{cfg: Config{Store: store.New(cli, store.WithPrefix("/hold/"))}}, cli
}

// A hold ends with a read, and its inflight key is deleted afterwards: a
// collection waiting on holds taken before it does not wait forever, and
// a write whose registry lost its lease meanwhile (a stall longer than
// the TTL: the collector may not have waited for it) is not acknowledged.
func TestHoldEndsAndLostLeaseFailsTheWrite(t *testing.T) {
	r, cli := holdRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := "sha256:" + "ab"
	for len(d) < 71 {
		d += "0"
	}
	inflight := r.gcKey("inflight", "")
	var during int64
	if err := r.holdBlobs(ctx, []string{d}, func() error {
		resp, err := cli.Get(ctx, inflight, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		during = resp.Count
		return nil
	}); err != nil {
		t.Fatalf("holdBlobs = %v", err)
	}
	if during != 1 {
		t.Errorf("%d inflight keys during the write, want 1", during)
	}
	// The collector's wait: every hold taken before now ends.
	put, err := cli.Put(ctx, r.gcKey("mark", ""), "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.waitInflight(ctx, put.Header.Revision); err != nil {
		t.Fatalf("waitInflight after the hold ended = %v", err)
	}
	resp, err := cli.Get(ctx, r.gcKey("touch", d))
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("touch key of %s: %v, %v; want it written", d, resp, err)
	}

	// The lease goes while the write runs.
	err = r.holdBlobs(ctx, []string{d}, func() error {
		lease, err := r.gcLease(ctx)
		if err != nil {
			return err
		}
		_, err = cli.Revoke(ctx, lease)
		return err
	})
	if !errors.Is(err, errLostHold) {
		t.Fatalf("holdBlobs with the lease revoked during the write = %v, want errLostHold", err)
	}
}

// A manifest put sends its hold while it writes. When a sweep's
// tombstone was there first, what it wrote meanwhile is not acknowledged:
// it waits for the sweep to end and writes again under a hold.
func TestHoldAlongsideRetriesAfterASweep(t *testing.T) {
	r, cli := holdRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := "sha256:" + strings.Repeat("cd", 32)
	tomb := r.gcKey("tomb", d)
	if _, err := cli.Put(ctx, tomb, ""); err != nil {
		t.Fatal(err)
	}
	var runs atomic.Int32
	errc := make(chan error, 1)
	go func() {
		errc <- r.holdBlobsAlongside(ctx, []string{d}, func() error {
			if runs.Add(1) == 1 {
				// The sweep ends after the first write.
				go func() {
					time.Sleep(50 * time.Millisecond)
					cli.Delete(ctx, tomb)
				}()
			}
			return nil
		})
	}()
	if err := <-errc; err != nil {
		t.Fatalf("holdBlobsAlongside = %v", err)
	}
	if n := runs.Load(); n != 2 {
		t.Errorf("the write ran %d times, want 2: once alongside the refused hold, once after the sweep", n)
	}
	resp, err := cli.Get(ctx, r.gcKey("touch", d))
	if err != nil || len(resp.Kvs) != 1 {
		t.Errorf("touch key after the write: %v, %v; want it written", resp, err)
	}

	// Without a tombstone the write runs once.
	runs.Store(0)
	if err := r.holdBlobsAlongside(ctx, []string{d}, func() error { runs.Add(1); return nil }); err != nil || runs.Load() != 1 {
		t.Errorf("holdBlobsAlongside without a sweep = %v after %d runs, want nil after 1", err, runs.Load())
	}
}
