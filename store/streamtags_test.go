package store_test

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

func tagList(tag, digest string) api.NamedTagEventList {
	return api.NamedTagEventList{Tag: tag, Items: []api.TagEvent{{Image: digest, DockerImageReference: "r/p/s@" + digest, Created: time.Unix(1, 0).UTC()}}}
}

// tagsOf is "tag=head,…" of a stream.
func tagsOf(is *api.ImageStream) string {
	var out []string
	for _, t := range is.Status.Tags {
		out = append(out, t.Tag+"="+t.Items[0].Image)
	}
	return strings.Join(out, ",")
}

// A stream stored with its tags inline (before tag keys) reads as before;
// its first tag move moves every tag to a key of its own, and from then
// on each tag move writes that tag's key only and is one MODIFIED event
// of the whole stream on a watch.
func TestStreamTagsMigrateMoveAndWatch(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "app"}}
	is.Status.Tags = []api.NamedTagEventList{tagList("b", "2"), tagList("a", "1")}
	if err := s.Create(ctx, api.ImageStreams, is); err != nil {
		t.Fatal(err)
	}
	// Another stream whose name starts the same: its tags are its own.
	if err := s.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "app/x"}}); err != nil {
		t.Fatal(err)
	}
	o, err := s.Get(ctx, api.ImageStreams, "p", "app")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tagsOf(o.(*api.ImageStream)), "a=1,b=2"; got != want {
		t.Errorf("inline stream reads as %s, want %s", got, want)
	}
	items, meta, err := s.List(ctx, api.ImageStreams, "p", store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 2 || tagsOf(items[0].(*api.ImageStream)) != "a=1,b=2" {
		t.Fatalf("List = %d streams, first %s", len(items), tagsOf(items[0].(*api.ImageStream)))
	}
	rv, _ := strconv.ParseInt(meta.ResourceVersion, 10, 64)
	ch, err := s.Watch(ctx, api.ImageStreams, "p", rv, store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	move := func(stream, tag, digest string) int64 {
		t.Helper()
		for {
			st, err := s.GetStreamTag(ctx, "p", stream, tag)
			if err != nil {
				t.Fatal(err)
			}
			rev, err := s.PutStreamTag(ctx, st, tagList(tag, digest))
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			return rev
		}
	}
	move("app", "a", "3")
	raw, err := s.Client().Get(ctx, s.Key(api.ImageStreams, "p", "app"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw.Kvs[0].Value), `"tags"`) {
		t.Errorf("after a tag move the stream's key still holds tags: %s", raw.Kvs[0].Value)
	}
	// The migration is one event (the stream as before), the move another.
	next := func() *api.ImageStream {
		t.Helper()
		select {
		case ev := <-ch:
			if ev.Type != api.Modified {
				t.Fatalf("event %s %v, want MODIFIED", ev.Type, ev.Err)
			}
			return ev.Object.(*api.ImageStream)
		case <-time.After(10 * time.Second):
			t.Fatal("no watch event")
		}
		return nil
	}
	if got := tagsOf(next()); got != "a=1,b=2" {
		t.Errorf("migration event: %s, want a=1,b=2", got)
	}
	if got := tagsOf(next()); got != "a=3,b=2" {
		t.Errorf("move event: %s, want a=3,b=2", got)
	}
	before, _ := s.Client().Get(ctx, s.Key(api.ImageStreams, "p", "app"))
	for i := range 5 {
		rev := move("app", "b", fmt.Sprint(10+i))
		ev := next()
		if got, want := tagsOf(ev), fmt.Sprintf("a=3,b=%d", 10+i); got != want {
			t.Errorf("move %d event: %s, want %s", i, got, want)
		}
		if ev.ResourceVersion != strconv.FormatInt(rev, 10) {
			t.Errorf("move %d event at resourceVersion %s, want %d", i, ev.ResourceVersion, rev)
		}
	}
	after, _ := s.Client().Get(ctx, s.Key(api.ImageStreams, "p", "app"))
	if before.Kvs[0].ModRevision != after.Kvs[0].ModRevision {
		t.Errorf("moving an existing tag wrote the stream's key")
	}
	// A new tag: one event too.
	move("app", "c", "7")
	if got := tagsOf(next()); got != "a=3,b=14,c=7" {
		t.Errorf("new tag event: %s", got)
	}
	select {
	case ev := <-ch:
		t.Errorf("unexpected event %s %s", ev.Type, tagsOf(ev.Object.(*api.ImageStream)))
	case <-time.After(200 * time.Millisecond):
	}
	o, _ = s.Get(ctx, api.ImageStreams, "p", "app/x")
	if len(o.(*api.ImageStream).Status.Tags) != 0 {
		t.Errorf("stream app/x has tags of app: %s", tagsOf(o.(*api.ImageStream)))
	}
	// A watch resumed from before the moves sees the same stream.
	ch2, err := s.Watch(ctx, api.ImageStreams, "", rv, store.ListOptions{Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	var last *api.ImageStream
	for last == nil || tagsOf(last) != "a=3,b=14,c=7" {
		select {
		case ev := <-ch2:
			last = ev.Object.(*api.ImageStream)
		case <-time.After(10 * time.Second):
			t.Fatalf("resumed watch ends at %s", tagsOf(last))
		}
	}
}

// A whole-stream write (the API's status update, pruning) holds the
// whole stream: it fails when any tag moved since it was read, writes
// only the tags it changes, and removes the keys of tags it removes.
func TestStreamTagsUpdateAndDelete(t *testing.T) {
	ctx := testContext(t)
	s := newStore(t)
	if err := s.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "app"}}); err != nil {
		t.Fatal(err)
	}
	for i, tag := range []string{"a", "b", "c"} {
		st, err := s.GetStreamTag(ctx, "p", "app", tag)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutStreamTag(ctx, st, tagList(tag, fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	o, err := s.Get(ctx, api.ImageStreams, "p", "app")
	if err != nil {
		t.Fatal(err)
	}
	stale := o.(*api.ImageStream)
	st, _ := s.GetStreamTag(ctx, "p", "app", "b")
	if _, err := s.PutStreamTag(ctx, st, tagList("b", "9")); err != nil {
		t.Fatal(err)
	}
	stale.Status.Tags = stale.Status.Tags[1:]
	if err := s.Update(ctx, api.ImageStreams, stale, store.UpdateOptions{Status: true}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Update from before a tag move = %v, want ErrConflict", err)
	}
	st, _ = s.GetStreamTag(ctx, "p", "app", "c")
	st2, _ := s.GetStreamTag(ctx, "p", "app", "c")
	if _, err := s.PutStreamTag(ctx, st2, tagList("c", "5")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutStreamTag(ctx, st, tagList("c", "0")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("PutStreamTag of a stale read = %v, want ErrConflict", err)
	}
	o, err = s.GuaranteedUpdate(ctx, api.ImageStreams, "p", "app", store.UpdateOptions{Status: true}, func(o api.Object) error {
		is := o.(*api.ImageStream)
		is.Status.Tags = slices.DeleteFunc(is.Status.Tags, func(t api.NamedTagEventList) bool { return t.Tag == "a" })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := tagsOf(o.(*api.ImageStream)); got != "b=9,c=5" {
		t.Errorf("after removing a: %s", got)
	}
	tagKeys := func() int64 {
		resp, err := s.Client().Get(ctx, s.Prefix()+"imagestreamtags/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if n := tagKeys(); n != 2 {
		t.Errorf("%d tag keys after removing a, want 2", n)
	}
	o, _ = s.Get(ctx, api.ImageStreams, "p", "app")
	if got := tagsOf(o.(*api.ImageStream)); got != "b=9,c=5" {
		t.Errorf("Get after removing a: %s", got)
	}
	if _, err := s.Delete(ctx, api.ImageStreams, "p", "app", ""); err != nil {
		t.Fatal(err)
	}
	if n := tagKeys(); n != 0 {
		t.Errorf("%d tag keys after the stream's delete, want 0", n)
	}
	if err := s.Create(ctx, api.ImageStreams, &api.ImageStream{ObjectMeta: api.ObjectMeta{Namespace: "p", Name: "app"}}); err != nil {
		t.Fatal(err)
	}
	o, _ = s.Get(ctx, api.ImageStreams, "p", "app")
	if n := len(o.(*api.ImageStream).Status.Tags); n != 0 {
		t.Errorf("a stream made again under the same name has %d tags", n)
	}
	// A stale cached move of a stream deleted and made again fails.
	stale.ResourceVersion = o.GetObjectMeta().ResourceVersion
	cst, err := s.StreamTagOf(stale, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutStreamTag(ctx, cst, tagList("b", "5")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("cached move on another stream of the name = %v, want ErrConflict", err)
	}
	if n, err := s.DeleteAll(ctx, api.ImageStreams, "p"); err != nil || n != 1 {
		t.Errorf("DeleteAll = %d, %v", n, err)
	}
}
