package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/api"
)

// The tags of an ImageStream are stored under keys of their own, one per
// tag (PREFIX/imagestreamtags/PROJECT/STREAM:TAG holds the tag's
// api.NamedTagEventList), as OpenShift serves ImageStreamTag as a
// resource of its own: a tag move is one small compare-and-swap on that
// key, whatever the number of tags in the stream. Before, the stream was
// one etcd value of every tag's history (about 330 KB at 1,000 tags),
// marshalled, merged, written and decoded by every watcher on each move.
//
// Readers see the same ImageStream as before: Get, List, Watch and
// GetMany assemble status.tags from the stream's key and its tag keys,
// read at one revision, sorted by tag, and give it the newest revision of
// them as resourceVersion; a watch sends one event per revision that
// changed a stream (a tag move is one MODIFIED event). Update and
// Batch.UpdateStatus split a stream again, writing only the tags that
// changed. A stream stored with its tags inline (before tag keys) is read
// as it is and moved to tag keys by its first write.
//
// The stream's key is written (its bytes unchanged) whenever a tag is
// added or removed, so a compare on it catches a concurrent add (the tag
// limit) or removal (a whole-stream compare-and-swap: the stream's key
// and every tag key no newer than the revision read).
const streamTagsDir = "imagestreamtags/"

func isStreams(r *api.Resource) bool { return r == api.ImageStreams }

// streamTagPrefix is where the tags of one stream live. A stream name has
// no ':', so the prefix of stream "a" holds none of stream "a/b".
func (s *Store) streamTagPrefix(ns, stream string) string {
	return s.prefix + streamTagsDir + ns + "/" + stream + ":"
}

// streamTagsPrefix is where the tags of every stream of a project (every
// project when ns is empty) live.
func (s *Store) streamTagsPrefix(ns string) string {
	if ns == "" {
		return s.prefix + streamTagsDir
	}
	return s.prefix + streamTagsDir + ns + "/"
}

// streamState is one stream as stored: its own key's object (with the
// tags still inline, if any) and its keyed tags, sorted by tag.
type streamState struct {
	base    *api.ImageStream
	baseRaw []byte
	baseRev int64 // the stream key's mod revision
	tags    []api.NamedTagEventList
	raws    map[string][]byte // tag → bytes as stored
	maxRev  int64             // newest mod revision of the stream key and its tag keys
}

func decodeTag(kv *mvccpb.KeyValue) (api.NamedTagEventList, error) {
	var t api.NamedTagEventList
	if err := json.Unmarshal(kv.Value, &t); err != nil {
		return t, fmt.Errorf("store: stored image stream tag %s is corrupt: %w", kv.Key, err)
	}
	return t, nil
}

func newStreamState(base *mvccpb.KeyValue, tags []*mvccpb.KeyValue) (*streamState, error) {
	o, err := decode(api.ImageStreams, base.Value, base.ModRevision)
	if err != nil {
		return nil, err
	}
	st := &streamState{base: o.(*api.ImageStream), baseRaw: base.Value, baseRev: base.ModRevision, maxRev: base.ModRevision, raws: map[string][]byte{}}
	for _, kv := range tags {
		t, err := decodeTag(kv)
		if err != nil {
			return nil, err
		}
		st.tags = append(st.tags, t)
		st.raws[t.Tag] = kv.Value
		st.maxRev = max(st.maxRev, kv.ModRevision)
	}
	slices.SortFunc(st.tags, func(a, b api.NamedTagEventList) int { return strings.Compare(a.Tag, b.Tag) })
	return st, nil
}

// assemble is the stream as readers see it, at revision rev: a new
// object sharing nothing with st but the tags' item slices.
func (st *streamState) assemble(rev int64) *api.ImageStream {
	is := *st.base
	is.ResourceVersion = strconv.FormatInt(rev, 10)
	inline := st.base.Status.Tags
	switch {
	case len(inline) == 0:
		is.Status.Tags = slices.Clone(st.tags)
	default:
		merged := slices.Clone(st.tags)
		for _, t := range inline {
			if _, keyed := st.raws[t.Tag]; !keyed {
				merged = append(merged, t)
			}
		}
		slices.SortFunc(merged, func(a, b api.NamedTagEventList) int { return strings.Compare(a.Tag, b.Tag) })
		is.Status.Tags = merged
	}
	return &is
}

// setTag replaces or inserts t (copy on write: st.tags may be shared).
func (st *streamState) setTag(t api.NamedTagEventList, raw []byte) {
	i, found := slices.BinarySearchFunc(st.tags, t.Tag, func(e api.NamedTagEventList, tag string) int { return strings.Compare(e.Tag, tag) })
	tags := make([]api.NamedTagEventList, 0, len(st.tags)+1)
	tags = append(tags, st.tags[:i]...)
	tags = append(tags, t)
	if found {
		i++
	}
	st.tags = append(tags, st.tags[i:]...)
	st.raws[t.Tag] = raw
}

func (st *streamState) deleteTag(tag string) {
	i, found := slices.BinarySearchFunc(st.tags, tag, func(e api.NamedTagEventList, tag string) int { return strings.Compare(e.Tag, tag) })
	if found {
		st.tags = slices.Concat(st.tags[:i], st.tags[i+1:])
	}
	delete(st.raws, tag)
}

// readStream reads one stream and its tags at one revision (0: now).
func (s *Store) readStream(ctx context.Context, ns, name string, rev int64) (*streamState, int64, error) {
	opts := []clientv3.OpOption{clientv3.WithRev(rev)}
	resp, err := s.client.Txn(ctx).Then(
		clientv3.OpGet(s.Key(api.ImageStreams, ns, name), opts...),
		clientv3.OpGet(s.streamTagPrefix(ns, name), append(opts, clientv3.WithPrefix())...),
	).Commit()
	if err != nil {
		return nil, 0, wrapEtcd(err, api.ImageStreams, name)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, resp.Header.Revision, fmt.Errorf("%s %q: %w", api.ImageStreams.Kind, name, ErrNotFound)
	}
	st, err := newStreamState(kvs[0], resp.Responses[1].GetResponseRange().Kvs)
	return st, resp.Header.Revision, err
}

// readWritable is readStream for a writer: a stream whose tags are still
// inline is moved to tag keys first.
func (s *Store) readWritable(ctx context.Context, ns, name string) (*streamState, error) {
	for {
		st, _, err := s.readStream(ctx, ns, name, 0)
		if err != nil || len(st.base.Status.Tags) == 0 {
			return st, err
		}
		if err := s.migrateStream(ctx, st); err != nil {
			return nil, err
		}
	}
}

// migrateStream moves the inline tags of a stream to tag keys (a tag
// already keyed keeps its key), in one transaction with the stream's
// key rewritten without them. Readers see the same stream before and
// after. A conflict is not an error: the caller reads again.
func (s *Store) migrateStream(ctx context.Context, st *streamState) error {
	ns, name := st.base.Namespace, st.base.Name
	key := s.Key(api.ImageStreams, ns, name)
	base := *st.base
	base.ResourceVersion = ""
	base.Status.Tags = nil
	data, err := json.Marshal(&base)
	if err != nil {
		return err
	}
	ops := []clientv3.Op{clientv3.OpPut(key, string(data))}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", st.baseRev)}
	for _, t := range st.base.Status.Tags {
		if _, keyed := st.raws[t.Tag]; keyed {
			continue
		}
		tk := s.streamTagPrefix(ns, name) + t.Tag
		raw, err := json.Marshal(t)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(tk, string(raw)))
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(tk), "=", 0))
	}
	if _, err := s.commit(ctx, cmps, ops, nil); err != nil {
		return wrapEtcd(err, api.ImageStreams, name)
	}
	return nil
}

// getStream is Get of an ImageStream.
func (s *Store) getStream(ctx context.Context, ns, name string) (api.Object, error) {
	st, _, err := s.readStream(ctx, ns, name, 0)
	if err != nil {
		return nil, err
	}
	return st.assemble(st.maxRev), nil
}

// streamStates reads the keyed tags of streams decoded from their keys
// at rev, in transactions of 64 streams.
func (s *Store) streamStates(ctx context.Context, kvs []*mvccpb.KeyValue, rev int64) ([]*streamState, error) {
	out := make([]*streamState, 0, len(kvs))
	for start := 0; start < len(kvs); start += 64 {
		chunk := kvs[start:min(start+64, len(kvs))]
		var ops []clientv3.Op
		var names [][2]string
		for _, kv := range chunk {
			ns, name, _, _, ok := s.parseStreamKey(string(kv.Key))
			if !ok {
				return nil, fmt.Errorf("store: %s is not an image stream key: %w", kv.Key, ErrInvalid)
			}
			names = append(names, [2]string{ns, name})
			ops = append(ops, clientv3.OpGet(s.streamTagPrefix(ns, name), clientv3.WithPrefix(), clientv3.WithRev(rev)))
		}
		resp, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, wrapEtcd(err, api.ImageStreams, "")
		}
		for i, kv := range chunk {
			st, err := newStreamState(kv, resp.Responses[i].GetResponseRange().Kvs)
			if err != nil {
				return nil, err
			}
			out = append(out, st)
		}
	}
	return out, nil
}

// streamStatesIn is streamStates for every stream of project ns (every
// project when ns is empty): one range read of their tags, paged.
func (s *Store) streamStatesIn(ctx context.Context, ns string, kvs []*mvccpb.KeyValue, rev int64) ([]*streamState, error) {
	tags := map[string][]*mvccpb.KeyValue{} // by ns/name
	prefix := s.streamTagsPrefix(ns)
	start, end := prefix, clientv3.GetPrefixRangeEnd(prefix)
	for {
		resp, err := s.client.Get(ctx, start, clientv3.WithRange(end), clientv3.WithRev(rev), clientv3.WithLimit(1000))
		if err != nil {
			return nil, wrapEtcd(err, api.ImageStreams, "")
		}
		for _, kv := range resp.Kvs {
			if tns, name, _, isTag, ok := s.parseStreamKey(string(kv.Key)); ok && isTag {
				tags[tns+"/"+name] = append(tags[tns+"/"+name], kv)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	out := make([]*streamState, 0, len(kvs))
	for _, kv := range kvs {
		ns, name, _, _, ok := s.parseStreamKey(string(kv.Key))
		if !ok {
			return nil, fmt.Errorf("store: %s is not an image stream key: %w", kv.Key, ErrInvalid)
		}
		st, err := newStreamState(kv, tags[ns+"/"+name])
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// parseStreamKey tells a stream's key (tag empty, isTag false) from a
// tag's key; ok is false for any other key.
func (s *Store) parseStreamKey(key string) (ns, name, tag string, isTag, ok bool) {
	rest, found := strings.CutPrefix(key, s.prefix+api.ImageStreams.Name+"/")
	if !found {
		if rest, isTag = strings.CutPrefix(key, s.prefix+streamTagsDir); !isTag {
			return "", "", "", false, false
		}
	}
	ns, rest, found = strings.Cut(rest, "/")
	if !found {
		return "", "", "", false, false
	}
	if isTag {
		name, tag, found = strings.Cut(rest, ":")
		return ns, name, tag, true, found
	}
	return ns, rest, "", false, true
}

// StreamTag is one tag of an image stream read for a move: the stream
// (without its tags) and the tag's history, nil when the stream has no
// such tag. Get it with GetStreamTag and write it back with
// PutStreamTag.
type StreamTag struct {
	Stream *api.ImageStream
	Tag    *api.NamedTagEventList
	// Tags is how many tags the stream has.
	Tags int

	baseRaw         []byte
	baseRev, tagRev int64
	// at is the revision of the cached stream a StreamTagOf was made
	// from (0 for GetStreamTag).
	at int64
}

// StreamTagOf is GetStreamTag from a stream as a cache (an informer)
// holds it, with no read: PutStreamTag then fails with ErrConflict if
// the tag or the stream changed since the cache's revision, or the
// stream's tags are still inline. is is not modified.
func (s *Store) StreamTagOf(is *api.ImageStream, tag string) (*StreamTag, error) {
	at, err := ParseResourceVersion(is.ResourceVersion)
	if err != nil || at == 0 {
		return nil, fmt.Errorf("store: a cached image stream needs a resourceVersion: %w", ErrInvalid)
	}
	base := *is
	base.ResourceVersion = ""
	base.Status.Tags = nil
	raw, err := json.Marshal(&base)
	if err != nil {
		return nil, err
	}
	out := &StreamTag{Tags: len(is.Status.Tags), baseRaw: raw, at: at}
	base.ResourceVersion = is.ResourceVersion
	out.Stream = &base
	for i := range is.Status.Tags {
		if is.Status.Tags[i].Tag == tag {
			t := is.Status.Tags[i]
			out.Tag = &t
		}
	}
	return out, nil
}

// GetStreamTag reads one tag of a stream, with the stream and the number
// of its tags, in one request (a stream whose tags are still inline is
// moved to tag keys first). ErrNotFound if the stream does not exist.
func (s *Store) GetStreamTag(ctx context.Context, ns, stream, tag string) (*StreamTag, error) {
	key := s.Key(api.ImageStreams, ns, stream)
	tk := s.streamTagPrefix(ns, stream) + tag
	for {
		resp, err := s.client.Txn(ctx).Then(
			clientv3.OpGet(key),
			clientv3.OpGet(tk),
			clientv3.OpGet(s.streamTagPrefix(ns, stream), clientv3.WithPrefix(), clientv3.WithCountOnly()),
		).Commit()
		if err != nil {
			return nil, wrapEtcd(err, api.ImageStreams, stream)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return nil, fmt.Errorf("%s %q: %w", api.ImageStreams.Kind, stream, ErrNotFound)
		}
		o, err := decode(api.ImageStreams, kvs[0].Value, kvs[0].ModRevision)
		if err != nil {
			return nil, err
		}
		is := o.(*api.ImageStream)
		if len(is.Status.Tags) > 0 {
			if _, err := s.readWritable(ctx, ns, stream); err != nil {
				return nil, err
			}
			continue
		}
		out := &StreamTag{Stream: is, Tags: int(resp.Responses[2].GetResponseRange().Count), baseRaw: kvs[0].Value, baseRev: kvs[0].ModRevision}
		if tkvs := resp.Responses[1].GetResponseRange().Kvs; len(tkvs) > 0 {
			t, err := decodeTag(tkvs[0])
			if err != nil {
				return nil, err
			}
			out.Tag, out.tagRev = &t, tkvs[0].ModRevision
		}
		return out, nil
	}
}

// PutStreamTag writes t as the tag read by GetStreamTag, in one
// compare-and-swap: ErrConflict when the tag or the stream changed since
// the read. It returns the revision written.
func (s *Store) PutStreamTag(ctx context.Context, st *StreamTag, t api.NamedTagEventList) (int64, error) {
	ns, name := st.Stream.Namespace, st.Stream.Name
	key := s.Key(api.ImageStreams, ns, name)
	tk := s.streamTagPrefix(ns, name) + t.Tag
	if st.Tag != nil && st.Tag.Tag != t.Tag {
		return 0, fmt.Errorf("store: tag %q read, %q written: %w", st.Tag.Tag, t.Tag, ErrInvalid)
	}
	raw, err := json.Marshal(t)
	if err != nil {
		return 0, err
	}
	ops := []clientv3.Op{clientv3.OpPut(tk, string(raw))}
	if st.Tag == nil {
		// A new tag: the stream's key too, so that two new tags at the
		// tag limit do not both pass it.
		ops = append(ops, clientv3.OpPut(key, string(st.baseRaw)))
	}
	txn, err := s.commit(ctx, st.compares(key, tk), ops, nil)
	if err != nil {
		return 0, wrapEtcd(err, api.ImageStreams, name)
	}
	if !txn.Succeeded {
		return 0, fmt.Errorf("%s %q tag %q changed since it was read: %w", api.ImageStreams.Kind, name, t.Tag, ErrConflict)
	}
	return txn.Header.Revision, nil
}

// compares hold the stream's key and the tag's key to what was read.
func (st *StreamTag) compares(key, tk string) []clientv3.Cmp {
	if st.at == 0 {
		return []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(key), "=", st.baseRev),
			clientv3.Compare(clientv3.ModRevision(tk), "=", st.tagRev),
		}
	}
	// From a cache: the stream's key holds exactly the stream without
	// tags (so it exists, and no tag of it is still inline), and the tag
	// is as cached.
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", string(st.baseRaw))}
	if st.Tag == nil {
		return append(cmps, clientv3.Compare(clientv3.CreateRevision(tk), "=", 0), clientv3.Compare(clientv3.ModRevision(key), "<", st.at+1))
	}
	return append(cmps, clientv3.Compare(clientv3.ModRevision(tk), "<", st.at+1), clientv3.Compare(clientv3.CreateRevision(tk), ">", 0))
}

// DeleteStreamTag removes the tag read by GetStreamTag (which must have
// found it), in one compare-and-swap: ErrConflict when the tag or the
// stream changed since. It returns the revision written.
func (s *Store) DeleteStreamTag(ctx context.Context, st *StreamTag) (int64, error) {
	if st.Tag == nil {
		return 0, fmt.Errorf("store: no tag to delete: %w", ErrInvalid)
	}
	ns, name := st.Stream.Namespace, st.Stream.Name
	key := s.Key(api.ImageStreams, ns, name)
	tk := s.streamTagPrefix(ns, name) + st.Tag.Tag
	txn, err := s.commit(ctx, st.compares(key, tk), []clientv3.Op{clientv3.OpDelete(tk), clientv3.OpPut(key, string(st.baseRaw))}, nil)
	if err != nil {
		return 0, wrapEtcd(err, api.ImageStreams, name)
	}
	if !txn.Succeeded {
		return 0, fmt.Errorf("%s %q tag %q changed since it was read: %w", api.ImageStreams.Kind, name, st.Tag.Tag, ErrConflict)
	}
	return txn.Header.Revision, nil
}

// splitStream computes the writes that store data (an assembled stream)
// over st, the stream as read: the tags that changed, the tags removed,
// and the stream's own key when it changed or a tag was added or removed.
// The compares hold the whole stream to the revision read.
func (s *Store) splitStream(st *streamState, data []byte) (cmps []clientv3.Cmp, ops []clientv3.Op, err error) {
	var is api.ImageStream
	if err := json.Unmarshal(data, &is); err != nil {
		return nil, nil, fmt.Errorf("store: encode %s %q: %w", api.ImageStreams.Kind, st.base.Name, err)
	}
	ns, name := st.base.Namespace, st.base.Name
	key := s.Key(api.ImageStreams, ns, name)
	tags := is.Status.Tags
	is.Status.Tags = nil
	is.ResourceVersion = ""
	base, err := json.Marshal(&is)
	if err != nil {
		return nil, nil, err
	}
	bump := !bytes.Equal(base, st.baseRaw)
	seen := map[string]bool{}
	for _, t := range tags {
		if seen[t.Tag] {
			return nil, nil, fmt.Errorf("store: %s %q: tag %q appears twice in status.tags: %w", api.ImageStreams.Kind, name, t.Tag, ErrInvalid)
		}
		seen[t.Tag] = true
		raw, err := json.Marshal(t)
		if err != nil {
			return nil, nil, err
		}
		old, keyed := st.raws[t.Tag]
		if keyed && bytes.Equal(old, raw) {
			continue
		}
		bump = bump || !keyed
		ops = append(ops, clientv3.OpPut(s.streamTagPrefix(ns, name)+t.Tag, string(raw)))
	}
	for tag := range st.raws {
		if !seen[tag] {
			bump = true
			ops = append(ops, clientv3.OpDelete(s.streamTagPrefix(ns, name)+tag))
		}
	}
	if bump {
		ops = append(ops, clientv3.OpPut(key, string(base)))
	}
	cmps = []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(key), ">", 0),
		clientv3.Compare(clientv3.ModRevision(key), "<", st.maxRev+1),
		clientv3.Compare(clientv3.ModRevision(s.streamTagPrefix(ns, name)), "<", st.maxRev+1).WithPrefix(),
	}
	return cmps, ops, nil
}

// storedBytes is the stream as Update's merge compares it: assembled,
// without resourceVersion.
func (st *streamState) storedBytes() ([]byte, error) {
	is := st.assemble(0)
	is.ResourceVersion = ""
	return json.Marshal(is)
}

// updateStream is Update of an ImageStream.
func (s *Store) updateStream(ctx context.Context, obj api.Object, opts UpdateOptions) error {
	r := api.ImageStreams
	m := obj.GetObjectMeta()
	want := m.ResourceVersion
	*obj.GetTypeMeta() = api.TypeMeta{APIVersion: api.APIVersion, Kind: r.Kind}
	for {
		st, err := s.readWritable(ctx, m.Namespace, m.Name)
		if err != nil {
			return err
		}
		if want != "" && want != strconv.FormatInt(st.maxRev, 10) {
			return conflict(r, m.Name)
		}
		old, err := st.storedBytes()
		if err != nil {
			return err
		}
		data, err := s.merge(r, old, obj, opts)
		if err != nil {
			return err
		}
		rev := st.maxRev
		if !bytes.Equal(data, old) {
			cmps, ops, err := s.splitStream(st, data)
			if err != nil {
				return err
			}
			txn, err := s.commit(ctx, cmps, ops, nil)
			if err != nil {
				return wrapEtcd(err, r, m.Name)
			}
			if !txn.Succeeded {
				if want != "" {
					return conflict(r, m.Name)
				}
				continue
			}
			rev = txn.Header.Revision
		}
		return refresh(r, obj, data, rev)
	}
}

func setObject(dst, src api.Object) {
	reflect.ValueOf(dst).Elem().Set(reflect.ValueOf(src).Elem())
}

// refresh sets obj to data at revision rev.
func refresh(r *api.Resource, obj api.Object, data []byte, rev int64) error {
	o, err := decode(r, data, rev)
	if err != nil {
		return err
	}
	setObject(obj, o)
	return nil
}

// deleteStream is Delete of an ImageStream: the stream's key and its tag
// keys in one transaction.
func (s *Store) deleteStream(ctx context.Context, ns, name, precondition string) (api.Object, error) {
	r := api.ImageStreams
	key := s.Key(r, ns, name)
	for {
		st, _, err := s.readStream(ctx, ns, name, 0)
		if err != nil {
			return nil, err
		}
		if precondition != "" && precondition != strconv.FormatInt(st.maxRev, 10) {
			return nil, fmt.Errorf("%s %q changed since resourceVersion %s: %w", r.Kind, name, precondition, ErrConflict)
		}
		txn, err := s.commit(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(key), "=", st.baseRev),
			clientv3.Compare(clientv3.ModRevision(s.streamTagPrefix(ns, name)), "<", st.maxRev+1).WithPrefix(),
		}, []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(s.streamTagPrefix(ns, name), clientv3.WithPrefix())}, nil)
		if err != nil {
			return nil, wrapEtcd(err, r, name)
		}
		if !txn.Succeeded {
			continue
		}
		return st.assemble(txn.Header.Revision), nil
	}
}

// getManyStreams is GetMany of image streams: each assembled, with Data
// the assembled bytes and Rev its newest revision, for
// Batch.UpdateStatus. Streams with inline tags are moved to tag keys
// first, so that a batch writes tags only.
func (s *Store) getManyStreams(ctx context.Context, names [][2]string) (map[string]Raw, error) {
	r := api.ImageStreams
	for {
		var kvs []*mvccpb.KeyValue
		var rev int64
		for start := 0; start < len(names); start += 100 {
			var ops []clientv3.Op
			for _, n := range names[start:min(start+100, len(names))] {
				ops = append(ops, clientv3.OpGet(s.Key(r, n[0], n[1]), clientv3.WithRev(rev)))
			}
			resp, err := s.client.Txn(ctx).Then(ops...).Commit()
			if err != nil {
				return nil, wrapEtcd(err, r, "")
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			for _, rr := range resp.Responses {
				kvs = append(kvs, rr.GetResponseRange().Kvs...)
			}
		}
		sts, err := s.streamStates(ctx, kvs, rev)
		if err != nil {
			return nil, err
		}
		out := make(map[string]Raw, len(sts))
		migrated := false
		for _, st := range sts {
			if len(st.base.Status.Tags) > 0 {
				if err := s.migrateStream(ctx, st); err != nil {
					return nil, err
				}
				migrated = true
				continue
			}
			data, err := st.storedBytes()
			if err != nil {
				return nil, err
			}
			out[st.base.Namespace+"/"+st.base.Name] = Raw{Object: st.assemble(st.maxRev), Data: data, Rev: st.maxRev}
		}
		if !migrated {
			return out, nil
		}
	}
}

// streamStateOf is the stream as stored, from its assembled bytes (as
// GetMany gives them) at revision rev: every tag keyed.
func streamStateOf(data []byte, rev int64) (*streamState, error) {
	var is api.ImageStream
	if err := json.Unmarshal(data, &is); err != nil {
		return nil, fmt.Errorf("store: %s: %w", api.ImageStreams.Kind, err)
	}
	st := &streamState{tags: is.Status.Tags, raws: map[string][]byte{}, maxRev: rev}
	for _, t := range is.Status.Tags {
		raw, err := json.Marshal(t)
		if err != nil {
			return nil, err
		}
		st.raws[t.Tag] = raw
	}
	is.Status.Tags = nil
	base, err := json.Marshal(&is)
	if err != nil {
		return nil, err
	}
	st.base, st.baseRaw = &is, base
	return st, nil
}
