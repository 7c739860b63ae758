package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// repositoriesRoot is where distribution keeps each repository's links
// (layers, manifest revisions, tags, uploads) in its storage driver.
const repositoriesRoot = "/docker/registry/v2/repositories/"

// CleanProject removes what a deleted project left in the registry: the
// repositories under PROJECT/ (their blob and manifest links and unfinished
// uploads) and the referrers index of those repositories. Whoever makes a
// project of the same name later then cannot pull the old content by
// digest. The blobs themselves are content-addressed and shared; without a
// link no repository serves them.
//
// The sha512 → sha256 map stays: it is global and content-addressed, says
// nothing about who may read what, and other projects' links may use it.
//
// It is idempotent; the project finalizer calls it while the project is
// Terminating, when the registry refuses every request to the project.
func (r *Registry) CleanProject(ctx context.Context, project string) error {
	if project == "" || project == "." || project == ".." || strings.ContainsAny(project, "/\\") {
		return fmt.Errorf("registry: %q is not a project name", project)
	}
	if r.driver == nil {
		return errors.New("registry: storage is not ready yet; the project's deletion is retried")
	}
	r.manifests.removeProject(project)
	err := r.driver.Delete(ctx, repositoriesRoot+project)
	var missing storagedriver.PathNotFoundError
	if err != nil && !errors.As(err, &missing) {
		return fmt.Errorf("registry: removing the repositories of project %q: %w", project, err)
	}
	if _, err := r.cfg.Store.Client().Delete(ctx, r.cfg.Store.Prefix()+"referrers/"+project+"/", clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("registry: removing the referrers of project %q: %w", project, err)
	}
	return nil
}
