package store

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/apimachinery/pkg/labels"

	"slipway.dev/slipway/api"
)

// watchStreams is Watch of image streams, which are stored in parts
// (streamtags.go). It keeps every watched stream as stored (the stream's
// object and its tags) and sends, for each revision that changed a
// stream, one event with the stream assembled: a tag move decodes only
// that tag. One etcd watch covers the streams' and the tags' keys (both
// begin PREFIX/imagestream), filtered by key before anything is decoded;
// a watch of one project or one stream filters the others out.
func (s *Store) watchStreams(ctx context.Context, ns string, rv int64, opts ListOptions) (<-chan Event, error) {
	r := api.ImageStreams
	listOpts := ListOptions{Name: opts.Name}
	initial := rv == 0
	if rv > 0 {
		if err := s.readableAt(ctx, r, s.prefix+"imagestream", rv); err != nil {
			return nil, err
		}
	}
	sts, meta, err := s.listStreams(ctx, ns, listOpts, rv)
	if err != nil {
		return nil, err
	}
	if rv == 0 {
		fmt.Sscan(meta.ResourceVersion, &rv)
	}
	matches := func(o *api.ImageStream) bool {
		return o != nil && (opts.Selector == nil || opts.Selector.Matches(labels.Set(o.Labels)))
	}
	wanted := func(kns, kname string) bool {
		return (ns == "" || kns == ns) && (opts.Name == "" || kname == opts.Name)
	}
	state := map[string]*streamState{} // by ns/name
	for _, st := range sts {
		state[st.base.Namespace+"/"+st.base.Name] = st
	}
	ctx, cancel := context.WithCancel(ctx)
	wch := s.client.Watch(clientv3.WithRequireLeader(ctx), s.prefix+"imagestream", clientv3.WithPrefix(), clientv3.WithRev(rv+1))
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		defer cancel()
		send := sender(ctx, out)
		if initial {
			for _, st := range sts {
				if is := st.assemble(st.maxRev); matches(is) && !send(Event{Type: api.Added, Object: is}) {
					return
				}
			}
		}
		// change is what one revision did to one stream.
		type change struct {
			prev          *api.ImageStream // the stream's object before, nil if new
			before        streamState      // the stream before (its slices are never changed in place)
			created, gone bool
		}
		for resp := range wch {
			if err := watchFailed(resp, rv, r); err != nil {
				send(Event{Type: api.Error, Err: err})
				return
			}
			for i := 0; i < len(resp.Events); {
				// The events of one revision (one transaction).
				rev := resp.Events[i].Kv.ModRevision
				var order []string
				changes := map[string]*change{}
				for ; i < len(resp.Events) && resp.Events[i].Kv.ModRevision == rev; i++ {
					e := resp.Events[i]
					kns, kname, tag, isTag, ok := s.parseStreamKey(string(e.Kv.Key))
					if !ok || !wanted(kns, kname) {
						continue
					}
					k := kns + "/" + kname
					st := state[k]
					c := changes[k]
					if c == nil {
						c = &change{}
						if st != nil {
							c.prev, c.before = st.base, *st
						}
						changes[k] = c
						order = append(order, k)
					}
					if st == nil {
						st = &streamState{raws: map[string][]byte{}}
						state[k] = st
					}
					switch {
					case isTag && e.Type == mvccpb.DELETE:
						st.deleteTag(tag)
					case isTag:
						t, err := decodeTag(e.Kv)
						if err != nil {
							send(Event{Type: api.Error, Err: err})
							return
						}
						st.setTag(t, e.Kv.Value)
					case e.Type == mvccpb.DELETE:
						c.gone = true
					default:
						o, err := decode(r, e.Kv.Value, e.Kv.ModRevision)
						if err != nil {
							send(Event{Type: api.Error, Err: err})
							return
						}
						c.created = c.created || e.IsCreate()
						st.base, st.baseRaw, st.baseRev = o.(*api.ImageStream), e.Kv.Value, e.Kv.ModRevision
					}
					st.maxRev = rev
				}
				for _, k := range order {
					c, st := changes[k], state[k]
					if c.gone {
						delete(state, k)
						if matches(c.prev) && !send(Event{Type: api.Deleted, Object: c.before.assemble(rev)}) {
							return
						}
						continue
					}
					if st.base == nil {
						continue // tags of a stream not stored (yet)
					}
					cur := st.assemble(rev)
					var ev Event
					switch {
					case matches(cur) && (c.created || c.prev == nil || !matches(c.prev)):
						ev = Event{Type: api.Added, Object: cur}
					case matches(cur):
						ev = Event{Type: api.Modified, Object: cur}
					case matches(c.prev):
						ev = Event{Type: api.Deleted, Object: cur}
					default:
						continue
					}
					if !send(ev) {
						return
					}
				}
				rv = rev
			}
		}
		if ctx.Err() == nil {
			send(Event{Type: api.Error, Err: fmt.Errorf("store: watch closed by etcd")})
		}
	}()
	return out, nil
}
