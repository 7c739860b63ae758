package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	clientv3 "go.etcd.io/etcd/client/v3"

	"slipway.dev/slipway/store"
)

// referrers is the OCI 1.1 referrers index: for each repository and subject
// digest, the descriptors of the manifests whose subject it is. It lives in
// etcd next to the resources, one key per referrer, so a lookup is one
// prefix read.
type referrers struct{ store *store.Store }

func (x *referrers) prefix(repo, subject string) string {
	return x.store.Prefix() + "referrers/" + repo + "/" + subject + "/"
}

func (x *referrers) add(ctx context.Context, repo, subject string, d v1.Descriptor) error {
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	_, err = x.store.Client().Put(ctx, x.prefix(repo, subject)+d.Digest.String(), string(data))
	return err
}

// remove drops a deleted manifest from every subject's list in repo. Keys
// are referrers/REPO/SUBJECT/DIGEST; the prefix referrers/REPO/ also holds
// the keys of nested repositories (REPO/more/...), which are not ours:
// a subject is a digest, so our keys have exactly two parts after it.
func (x *referrers) remove(ctx context.Context, repo, dgst string) error {
	prefix := x.store.Prefix() + "referrers/" + repo + "/"
	resp, err := x.store.Client().Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		subject, d, ok := strings.Cut(strings.TrimPrefix(k, prefix), "/")
		if !ok || d != dgst || strings.Contains(subject, "/") || !strings.Contains(subject, ":") {
			continue
		}
		if _, err := x.store.Client().Delete(ctx, k); err != nil {
			return err
		}
	}
	return nil
}

func (x *referrers) list(ctx context.Context, repo, subject string) ([]v1.Descriptor, error) {
	resp, err := x.store.Client().Get(ctx, x.prefix(repo, subject), clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make([]v1.Descriptor, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var d v1.Descriptor
		if json.Unmarshal(kv.Value, &d) == nil {
			out = append(out, d)
		}
	}
	return out, nil
}

// artifactType is what the referrers API reports for a manifest: its
// artifactType, or else its config's media type.
func artifactType(payload []byte) string {
	var m struct {
		ArtifactType string         `json:"artifactType"`
		Config       *v1.Descriptor `json:"config"`
	}
	if json.Unmarshal(payload, &m) != nil {
		return ""
	}
	if m.ArtifactType == "" && m.Config != nil {
		return m.Config.MediaType
	}
	return m.ArtifactType
}

func (r *Registry) serveReferrers(w http.ResponseWriter, req *http.Request, rt route) {
	subject := rt.reference
	if mapped, ok := r.sha512Lookup(req.Context(), subject); ok {
		subject = mapped
	}
	descs, err := r.refs.list(req.Context(), rt.name, rt.reference)
	if err != nil {
		ociErr(http.StatusInternalServerError, "UNKNOWN", "reading referrers: %v", err).write(w)
		return
	}
	if subject != rt.reference {
		more, _ := r.refs.list(req.Context(), rt.name, subject)
		descs = append(descs, more...)
	}
	if at := req.URL.Query().Get("artifactType"); at != "" {
		kept := descs[:0]
		for _, d := range descs {
			if d.ArtifactType == at {
				kept = append(kept, d)
			}
		}
		descs = kept
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	idx := v1.Index{MediaType: v1.MediaTypeImageIndex, Manifests: descs}
	idx.SchemaVersion = 2
	if idx.Manifests == nil {
		idx.Manifests = []v1.Descriptor{}
	}
	w.Header().Set("Content-Type", v1.MediaTypeImageIndex)
	w.WriteHeader(http.StatusOK)
	if req.Method == http.MethodGet {
		_ = json.NewEncoder(w).Encode(idx)
	}
}
