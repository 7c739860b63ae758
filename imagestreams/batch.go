package imagestreams

import (
	"time"

	"slipway.dev/slipway/api"
)

// ApplyTagMove moves stream:tag of is, in memory, to digest as MoveTag
// does (the previous position kept in history, limits applied), for a
// writer that stores many streams in one store.Batch. The stream must
// exist.
func (r *Recorder) ApplyTagMove(is *api.ImageStream, tag, digest, by string) error {
	ev := api.TagEvent{
		Created:              r.now().Truncate(time.Millisecond),
		DockerImageReference: r.Reference(is.Namespace, is.Name, digest),
		Image:                digest,
		By:                   by,
		Generation:           is.Generation,
	}
	if err := r.pushTag(is, tag, ev); err != nil {
		return err
	}
	is.Status.DockerImageRepository = r.registry() + "/" + is.Namespace + "/" + is.Name
	return nil
}
