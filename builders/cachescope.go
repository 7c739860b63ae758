package builders

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/buildkit/client/llb/sourceresolver"
	gateway "github.com/moby/buildkit/frontend/gateway/client"
	"github.com/moby/buildkit/solver/pb"
	digest "github.com/opencontainers/go-digest"
	"google.golang.org/protobuf/proto"
)

// One buildkitd serves every project, and BuildKit shares `RUN
// --mount=type=cache` by id (default: the target path) across all of its
// builds. So the Dockerfile frontend runs here, in Slipway, through
// scopedGateway, which rewrites every cache mount's id in the LLB it
// solves to one under the build's project: a project reads and writes only
// its own caches.

// cacheScope is the cache-id prefix of a project.
func cacheScope(project string) string { return "slipway/" + project + "/" }

// scopedGateway passes a gateway client through, namespacing cache mounts,
// checking every image the build names against the registry as the
// build's project (imageaccess.go), and refusing other frontends (which
// would make LLB Slipway never sees).
type scopedGateway struct {
	gateway.Client
	prefix string
	access *imageAccess
}

func (g *scopedGateway) Solve(ctx context.Context, req gateway.SolveRequest) (*gateway.Result, error) {
	if req.Frontend != "" {
		return nil, fmt.Errorf("builds cannot run the frontend %q (a `# syntax=` line or BUILDKIT_SYNTAX): Slipway builds with its own Dockerfile frontend, so that caches stay per project", req.Frontend)
	}
	if req.Definition != nil {
		var refs []string
		def, err := scopeDefinition(req.Definition, g.prefix, func(ref string) { refs = append(refs, ref) })
		if err != nil {
			return nil, err
		}
		for _, ref := range refs {
			if err := g.checkImage(ctx, ref); err != nil {
				return nil, err
			}
		}
		req.Definition = def
	}
	return g.Client.Solve(ctx, req)
}

func (g *scopedGateway) checkImage(ctx context.Context, ref string) error {
	if g.access == nil {
		return fmt.Errorf("builders: %s is not checked: this build has no registry access to check images with", ref)
	}
	return g.access.check(ctx, ref)
}

// ResolveImageConfig is the frontend reading an image's config (FROM):
// checked first, since BuildKit answers it from its cache as well.
func (g *scopedGateway) ResolveImageConfig(ctx context.Context, ref string, opt sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	if err := g.checkImage(ctx, ref); err != nil {
		return "", "", nil, err
	}
	forcePull(&opt)
	return g.Client.ResolveImageConfig(ctx, ref, opt)
}

// ResolveSourceMetadata is ResolveImageConfig for any source.
func (g *scopedGateway) ResolveSourceMetadata(ctx context.Context, op *pb.SourceOp, opt sourceresolver.Opt) (*sourceresolver.MetaResponse, error) {
	if ref, ok := strings.CutPrefix(op.GetIdentifier(), dockerImageScheme); ok {
		if err := g.checkImage(ctx, ref); err != nil {
			return nil, err
		}
		forcePull(&opt)
	}
	return g.Client.ResolveSourceMetadata(ctx, op, opt)
}

func forcePull(opt *sourceresolver.Opt) {
	if opt.ImageOpt == nil {
		opt.ImageOpt = &sourceresolver.ResolveImageOpt{}
	}
	opt.ImageOpt.ResolveMode = pb.AttrImageResolveModeForcePull
}

const dockerImageScheme = "docker-image://"

// scopeCacheMounts returns def with every cache mount's id under prefix.
func scopeCacheMounts(def *pb.Definition, prefix string) (*pb.Definition, error) {
	return scopeDefinition(def, prefix, func(string) {})
}

// scopeDefinition returns def with every cache mount's id under prefix and
// every image source in force-pull mode, and hands each image reference
// to image. Ops are keyed by the digest of their bytes, so a changed op
// changes its digest, and every op that takes it as input, and the
// metadata keyed by it, follow.
func scopeDefinition(def *pb.Definition, prefix string, image func(ref string)) (*pb.Definition, error) {
	out := &pb.Definition{Metadata: map[string]*pb.OpMetadata{}}
	renamed := map[string]string{} // old digest → new
	for _, dt := range def.Def {
		var op pb.Op
		if err := proto.Unmarshal(dt, &op); err != nil {
			return nil, fmt.Errorf("builders: reading LLB: %w", err)
		}
		changed := false
		for _, in := range op.Inputs {
			if d, ok := renamed[in.Digest]; ok {
				in.Digest, changed = d, true
			}
		}
		if src := op.GetSource(); src != nil {
			scheme, _, _ := strings.Cut(src.Identifier, "://")
			switch scheme {
			case "docker-image", "local":
			default:
				// buildkitd fetches these itself, from the host's network
				// namespace: past the build network's firewall (C2), and
				// for docker-image+blob from its shared content store (H2).
				return nil, fmt.Errorf("builds cannot fetch a %s source (ADD of a URL, a git repository or an image blob): the build daemon would fetch it from the host's network, outside the build network; download it in a RUN step instead", scheme)
			}
			if ref, ok := strings.CutPrefix(src.Identifier, dockerImageScheme); ok {
				image(ref)
				if src.Attrs[pb.AttrImageResolveMode] != pb.AttrImageResolveModeForcePull {
					if src.Attrs == nil {
						src.Attrs = map[string]string{}
					}
					src.Attrs[pb.AttrImageResolveMode], changed = pb.AttrImageResolveModeForcePull, true
				}
			}
		}
		if ex := op.GetExec(); ex != nil {
			for _, m := range ex.Mounts {
				if m.MountType != pb.MountType_CACHE {
					continue
				}
				if m.CacheOpt == nil {
					m.CacheOpt = &pb.CacheOpt{}
				}
				id := m.CacheOpt.ID
				if id == "" {
					id = m.Dest
				}
				m.CacheOpt.ID, changed = prefix+id, true
			}
		}
		old := digest.FromBytes(dt).String()
		if changed {
			var err error
			if dt, err = (proto.MarshalOptions{Deterministic: true}).Marshal(&op); err != nil {
				return nil, fmt.Errorf("builders: writing LLB: %w", err)
			}
			renamed[old] = digest.FromBytes(dt).String()
		}
		out.Def = append(out.Def, dt)
	}
	key := func(k string) string {
		if n, ok := renamed[k]; ok {
			return n
		}
		return k
	}
	for k, v := range def.Metadata {
		out.Metadata[key(k)] = v
	}
	if def.Source != nil {
		out.Source = &pb.Source{Infos: def.Source.Infos, Locations: map[string]*pb.Locations{}}
		for k, v := range def.Source.Locations {
			out.Source.Locations[key(k)] = v
		}
	}
	if len(out.Def) == 0 && len(def.Def) != 0 {
		return nil, errors.New("builders: empty LLB")
	}
	return out, nil
}
