package builders

import (
	"context"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
)

// TestScopeCacheMounts: every cache mount id lands under the project's
// prefix, other mounts are untouched, and the rewritten graph is whole:
// every input and metadata key names an op of the new definition.
func TestScopeCacheMounts(t *testing.T) {
	base := llb.Image("docker.io/library/busybox:latest")
	first := base.Run(llb.Shlex("true"), llb.AddMount("/root/.cache/pip", llb.Scratch(), llb.AsPersistentCacheDir("/root/.cache/pip", llb.CacheMountShared))).Root()
	second := first.Run(llb.Shlex("true"), llb.AddMount("/go/pkg/mod", llb.Scratch(), llb.AsPersistentCacheDir("gomod", llb.CacheMountLocked)),
		llb.AddMount("/data", llb.Scratch())).Root()
	def, err := second.Marshal(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	scoped, err := scopeCacheMounts(def.ToPB(), cacheScope("team-a"))
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	var ids []string
	for _, dt := range scoped.Def {
		have[digest.FromBytes(dt).String()] = true
	}
	for _, dt := range scoped.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			t.Fatal(err)
		}
		for _, in := range op.Inputs {
			if !have[in.Digest] {
				t.Errorf("an op takes input %s, which is not in the rewritten definition", in.Digest)
			}
		}
		for _, m := range op.GetExec().GetMounts() {
			switch {
			case m.MountType == pb.MountType_CACHE:
				ids = append(ids, m.CacheOpt.ID)
			case m.Dest == "/data" && m.CacheOpt != nil:
				t.Errorf("a bind mount got cache options: %v", m.CacheOpt)
			}
		}
	}
	for k := range scoped.Metadata {
		if !have[k] {
			t.Errorf("metadata for %s, which is not in the rewritten definition", k)
		}
	}
	if got := strings.Join(ids, ","); got != "slipway/team-a//root/.cache/pip,slipway/team-a/gomod" {
		t.Errorf("cache ids = %s, want both under slipway/team-a/", got)
	}
	if len(scoped.Metadata) != len(def.Metadata) {
		t.Errorf("metadata: %d entries, want %d", len(scoped.Metadata), len(def.Metadata))
	}
}
