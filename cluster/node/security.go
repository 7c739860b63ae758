package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/store"
)

// imageUserer is the runtime's view of an image's configured user
// (runtime.Docker has it).
type imageUserer interface {
	ImageUser(ctx context.Context, ref string) (string, error)
}

// warnRootImages records a Warning event, once per image in a project,
// for each container of a restricted pod whose image's config names no
// user or root: it was built to run as root, and runs as the project's
// UID instead, so what it writes outside a volume fails. run is the pod
// as the runtime gets it (with runAsUser defaulted).
func (a *Agent) warnRootImages(ctx context.Context, run *api.Pod) {
	iu, ok := a.rt.(imageUserer)
	if !ok || run.Annotations[api.PodSecurityAnnotation] == api.PodSecurityPrivileged {
		return
	}
	for i := range run.Spec.Containers {
		c := &run.Spec.Containers[i]
		uid, _, ok := api.EffectiveUser(&run.Spec, c)
		if !ok {
			continue
		}
		user, err := iu.ImageUser(ctx, c.Image)
		if err != nil || !api.AssumesRoot(user) {
			continue
		}
		sum := sha256.Sum256([]byte(c.Image))
		ev := &api.Event{
			ObjectMeta:     api.ObjectMeta{Name: "root-image-" + hex.EncodeToString(sum[:8]), Namespace: run.Namespace},
			InvolvedObject: api.ObjectReference{Kind: "Pod", Name: run.Name, Namespace: run.Namespace},
			Reason:         "ImageAssumesRoot", Type: "Warning", Time: time.Now().UTC(),
			Message: fmt.Sprintf("image %s runs as root (its config sets USER %q); pods run restricted, so container %s of pod %s runs as UID %d from the project's range instead: "+
				"what it writes outside a volume fails unless the image makes those paths writable by any user; give the image a non-root USER, write to an emptyDir, "+
				"or ask a cluster admin for the privileged exception (%s)", c.Image, user, c.Name, run.Name, uid, api.PrivilegedPodsRole),
		}
		if err := a.cfg.Store.Create(ctx, api.Events, ev); err != nil && !errors.Is(err, store.ErrExists) {
			slog.Warn("node: recording an image that assumes root", "pod", run.Namespace+"/"+run.Name, "image", c.Image, "err", err)
		}
	}
}
