package imagestreams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
	"slipway.dev/slipway/store/storetest"
)

func digestN(i int) string { return fmt.Sprintf("sha256:%064x", i) }

// M5: a stream holds at most TagsPerStream tags and HistoryPerTag entries
// per tag; a new tag past the limit is refused with an error naming the
// stream, the project and what to do, and existing tags still move.
func TestRecorderTagAndHistoryLimits(t *testing.T) {
	ctx := storetest.Context(t)
	s := storetest.New(t, store.WithLimits(store.Limits{TagsPerStream: 3, HistoryPerTag: 4, Hint: "ask a cluster admin to raise --max-tags-per-stream"}))
	r := &Recorder{Store: s}
	create := func() error { return nil }
	for i, tag := range []string{"a", "b", "c"} {
		if _, err := r.MoveTag(ctx, "mal", "app", tag, digestN(i), "mallory", create); err != nil {
			t.Fatalf("MoveTag(%s) = %v", tag, err)
		}
	}
	if err := r.CheckTag(ctx, "mal", "app", "d"); !errors.Is(err, store.ErrLimit) {
		t.Errorf("CheckTag(4th tag) = %v, want ErrLimit", err)
	}
	_, err := r.MoveTag(ctx, "mal", "app", "d", digestN(9), "mallory", create)
	if !errors.Is(err, store.ErrLimit) {
		t.Fatalf("MoveTag(4th tag) = %v, want ErrLimit", err)
	}
	for _, want := range []string{`project "mal"`, `3 tags in image stream "app"`, "use another image stream", "--max-tags-per-stream"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("MoveTag(4th tag) error %q does not say %q", err, want)
		}
	}
	if err := r.CheckTag(ctx, "mal", "app", "a"); err != nil {
		t.Errorf("CheckTag(existing tag) = %v, want nil", err)
	}
	var is *api.ImageStream
	for i := 10; i < 16; i++ {
		if is, err = r.MoveTag(ctx, "mal", "app", "a", digestN(i), "mallory", create); err != nil {
			t.Fatalf("MoveTag(existing tag a, %d) = %v", i, err)
		}
	}
	for _, tg := range is.Status.Tags {
		if tg.Tag == "a" && (len(tg.Items) != 4 || tg.Items[0].Image != digestN(15)) {
			t.Errorf("tag a after 7 moves: %d entries, head %s; want 4, %s", len(tg.Items), tg.Items[0].Image, digestN(15))
		}
	}
	// MoveTag returns the moved tag only; the stream has all three.
	if len(is.Status.Tags) != 1 {
		t.Errorf("MoveTag returned %d tags, want the moved one", len(is.Status.Tags))
	}
	o, err := s.Get(ctx, api.ImageStreams, "mal", "app")
	if err != nil {
		t.Fatal(err)
	}
	if got := len(o.(*api.ImageStream).Status.Tags); got != 3 {
		t.Errorf("stream has %d tags, want 3", got)
	}
	// Another stream has room of its own.
	if _, err := r.MoveTag(ctx, "mal", "other", "d", digestN(9), "mallory", create); err != nil {
		t.Errorf("MoveTag(other stream) = %v", err)
	}
}

// A tag's history is bounded in bytes as well (a tag is one etcd value):
// the oldest entries go, and the current entry stays.
func TestTrimHistoryKeepsTagsWithinBudget(t *testing.T) {
	tg := api.NamedTagEventList{Tag: "t"}
	for j := range 200 {
		tg.Items = append(tg.Items, api.TagEvent{Image: digestN(j), DockerImageReference: "127.0.0.1:5000/p/s@" + digestN(j)})
	}
	const budget = 16 << 10
	trimHistory(&tg, budget)
	total := 0
	for _, ev := range tg.Items {
		b, _ := json.Marshal(ev)
		total += len(b) + 1
	}
	if total > budget {
		t.Errorf("history is %d bytes after trimHistory, want at most %d", total, budget)
	}
	if n := len(tg.Items); n < 2 || n == 200 || tg.Items[0].Image != digestN(0) {
		t.Errorf("trimHistory kept %d entries, head %s; want it trimmed from the oldest, head kept", n, tg.Items[0].Image)
	}
	one := api.NamedTagEventList{Tag: "t", Items: tg.Items[:1]}
	trimHistory(&one, 1)
	if len(one.Items) != 1 {
		t.Errorf("trimHistory dropped the current entry")
	}
}

// countWrites counts the etcd transactions with a write in them that the
// store's client sends (a create whose compare fails is one: etcd puts it
// through raft and syncs its log all the same).
type countWrites struct {
	clientv3.KV
	n     atomic.Int64
	reads atomic.Int64
}

func (c *countWrites) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c.reads.Add(1)
	return c.KV.Get(ctx, key, opts...)
}

func (c *countWrites) Txn(ctx context.Context) clientv3.Txn {
	return &countTxn{Txn: c.KV.Txn(ctx), c: c}
}

type countTxn struct {
	clientv3.Txn
	c     *countWrites
	write bool
}

func (t *countTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *countTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, o := range ops {
		t.write = t.write || o.IsPut() || o.IsDelete()
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}
func (t *countTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }
func (t *countTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.write {
		t.c.n.Add(1)
	}
	return t.Txn.Commit()
}

// A push by tag of a manifest pushed by digest just before records its
// Image again: that must cost etcd no write (issue 13 item 5).
func TestRecordImageTwiceWritesOnce(t *testing.T) {
	ctx := storetest.Context(t)
	s := storetest.New(t)
	cli := s.Client()
	counter := &countWrites{KV: cli.KV}
	cli.KV = counter
	t.Cleanup(func() { cli.KV = counter.KV })
	r := &Recorder{Store: s}
	img := &api.Image{ObjectMeta: api.ObjectMeta{Name: digestN(42)}, MediaType: "application/vnd.oci.image.manifest.v1+json"}
	if err := r.RecordImage(ctx, "twice", img); err != nil {
		t.Fatal(err)
	}
	first := counter.n.Load()
	if first == 0 {
		t.Fatal("recording a new Image wrote nothing to etcd")
	}
	again := &api.Image{ObjectMeta: api.ObjectMeta{Name: digestN(42)}, MediaType: "application/vnd.oci.image.manifest.v1+json"}
	if err := r.RecordImage(ctx, "twice", again); err != nil {
		t.Fatal(err)
	}
	if n := counter.n.Load() - first; n != 0 {
		t.Errorf("recording an Image that exists sent %d etcd write transactions, want 0", n)
	}
	if _, err := s.Get(ctx, api.Images, "twice", digestN(42)); err != nil {
		t.Errorf("the Image is not stored: %v", err)
	}
}

// A tag move starts from the cached stream: one write and no read when
// the cache is current; when it is behind, the move still lands on the
// stream as stored, and nothing another writer did is lost.
func TestMoveTagFromCache(t *testing.T) {
	ctx := storetest.Context(t)
	s := storetest.New(t)
	cli := s.Client()
	counter := &countWrites{KV: cli.KV}
	cli.KV = counter
	t.Cleanup(func() { cli.KV = counter.KV })
	var cached api.Object
	r := &Recorder{Store: s, Cached: func(project, stream string) (api.Object, bool) {
		return cached, cached != nil
	}}
	create := func() error { return nil }
	is, err := r.MoveTag(ctx, "cache", "app", "a", digestN(1), "alice", create)
	if err != nil {
		t.Fatal(err)
	}
	cached = is
	writes, reads := counter.n.Load(), counter.reads.Load()
	if is, err = r.MoveTag(ctx, "cache", "app", "b", digestN(2), "alice", create); err != nil {
		t.Fatal(err)
	}
	if w, rd := counter.n.Load()-writes, counter.reads.Load()-reads; w != 1 || rd != 0 {
		t.Errorf("a tag move from a current cache: %d writes and %d reads of etcd, want 1 and 0", w, rd)
	}
	// The cache is now one move behind (it still has only tag a).
	if _, err := r.MoveTag(ctx, "cache", "app", "c", digestN(3), "alice", create); err != nil {
		t.Fatal(err)
	}
	o, err := s.Get(ctx, api.ImageStreams, "cache", "app")
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, tg := range o.(*api.ImageStream).Status.Tags {
		tags = append(tags, tg.Tag+"="+tg.Items[0].Image[len(tg.Items[0].Image)-1:])
	}
	if got, want := strings.Join(tags, ","), "a=1,b=2,c=3"; got != want {
		t.Errorf("tags after a move from a stale cache: %s, want %s", got, want)
	}
	if is.ResourceVersion == "" || is.ResourceVersion == cached.GetObjectMeta().ResourceVersion {
		t.Errorf("the stream returned by a cached move has resourceVersion %q, want the new revision", is.ResourceVersion)
	}
}

// Tags are keys of their own, but the tag limit still holds under
// concurrent pushes of new tags to one stream, and every move of an
// existing tag lands in its history (none lost to a concurrent one).
func TestConcurrentTagMoves(t *testing.T) {
	ctx := storetest.Context(t)
	s := storetest.New(t, store.WithLimits(store.Limits{TagsPerStream: 10}))
	r := &Recorder{Store: s}
	create := func() error { return nil }
	if _, err := r.MoveTag(ctx, "c", "app", "t0", digestN(0), "alice", create); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var ok, limited atomic.Int64
	for i := 1; i <= 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := r.MoveTag(ctx, "c", "app", fmt.Sprintf("t%d", i), digestN(i), "alice", create)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, store.ErrLimit):
				limited.Add(1)
			default:
				t.Errorf("MoveTag(t%d) = %v", i, err)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.MoveTag(ctx, "c", "app", "t0", digestN(100+i), "alice", create); err != nil {
				t.Errorf("MoveTag(t0, %d) = %v", i, err)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 9 || limited.Load() != 11 {
		t.Errorf("new tags: %d stored, %d refused at the limit; want 9 and 11", ok.Load(), limited.Load())
	}
	o, err := s.Get(ctx, api.ImageStreams, "c", "app")
	if err != nil {
		t.Fatal(err)
	}
	is := o.(*api.ImageStream)
	if len(is.Status.Tags) != 10 {
		t.Errorf("stream has %d tags, want 10", len(is.Status.Tags))
	}
	for _, tg := range is.Status.Tags {
		if tg.Tag == "t0" && len(tg.Items) != 21 {
			t.Errorf("t0 has %d history entries after 20 moves, want 21", len(tg.Items))
		}
	}
}
