package registry

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/identity"
	"slipway.dev/slipway/rbac"
)

// AdminPrefix is where the API server mounts AdminHandler, behind its
// authentication.
const AdminPrefix = "/admin/v1/"

// PruneRequest is the body of POST /admin/v1/prune/images.
type PruneRequest struct {
	// Project limits the prune; "" prunes every project (cluster admins).
	Project          string `json:"project,omitempty"`
	KeepTagRevisions int    `json:"keepTagRevisions,omitempty"`
	// KeepYoungerThan is a duration such as "60m".
	KeepYoungerThan string `json:"keepYoungerThan,omitempty"`
	Confirm         bool   `json:"confirm,omitempty"`
}

// GCRequest is the body of POST /admin/v1/gc.
type GCRequest struct {
	Grace  string `json:"grace,omitempty"` // a duration; default 1h
	DryRun bool   `json:"dryRun,omitempty"`
}

// AdminHandler serves the registry's administration for the API server:
//
//	POST /admin/v1/prune/images       PruneRequest → PruneReport
//	POST /admin/v1/gc                 GCRequest → GCReport
//	GET  /admin/v1/blobs/DIGEST?grace=1h → BlobWhy
//
// Prune needs the prune verb on images in the project (project admins
// hold it), or cluster-wide for every project; collection and holders
// need it on blobs cluster-wide (cluster admins). The caller's identity
// is in the request context (the API server authenticated it).
func (r *Registry) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+AdminPrefix+"prune/images", r.servePrune)
	mux.HandleFunc("POST "+AdminPrefix+"gc", r.serveGC)
	mux.HandleFunc("GET "+AdminPrefix+"blobs/{digest}", r.serveWhy)
	return mux
}

func adminJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func adminStatus(w http.ResponseWriter, code int, reason, format string, args ...any) {
	adminJSON(w, code, api.NewStatus(code, reason, format, args...))
}

func (r *Registry) adminAllowed(w http.ResponseWriter, req *http.Request, resource, project string) bool {
	u := identity.FromContext(req.Context())
	if ok, why := r.cfg.Authz.Authorize(u, rbac.Attributes{Verb: "prune", Resource: resource, Namespace: project}); !ok {
		where := "cluster-wide (cluster admins)"
		if project != "" {
			where = "in project " + project + " (project admins)"
		}
		adminStatus(w, http.StatusForbidden, api.ReasonForbidden, "%s may not prune %s %s: %s", u.Name, resource, where, why)
		return false
	}
	return true
}

// maxAdminBody bounds the requests' bodies: a few fields each.
const maxAdminBody = 64 << 10

func decodeBody(w http.ResponseWriter, req *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, req.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			adminStatus(w, http.StatusRequestEntityTooLarge, api.ReasonTooLarge, "the request body is larger than the limit of %d KiB", maxAdminBody>>10)
			return false
		}
		adminStatus(w, http.StatusBadRequest, api.ReasonBadRequest, "the request body is not valid: %v", err)
		return false
	}
	return true
}

func parseDuration(w http.ResponseWriter, flag, v string) (time.Duration, bool) {
	if v == "" {
		return 0, true
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		adminStatus(w, http.StatusBadRequest, api.ReasonBadRequest, "%s %q is not a positive duration such as 60m", flag, v)
		return 0, false
	}
	return d, true
}

func (r *Registry) servePrune(w http.ResponseWriter, req *http.Request) {
	var in PruneRequest
	if !decodeBody(w, req, &in) {
		return
	}
	if msgs := validation.IsDNS1123Label(in.Project); in.Project != "" && len(msgs) > 0 {
		adminStatus(w, http.StatusBadRequest, api.ReasonBadRequest, "project %q is not a valid project name: %s", in.Project, strings.Join(msgs, "; "))
		return
	}
	if !r.adminAllowed(w, req, "images", in.Project) {
		return
	}
	d, ok := parseDuration(w, "--keep-younger-than", in.KeepYoungerThan)
	if !ok {
		return
	}
	rep, err := r.PruneImages(req.Context(), PruneOptions{Project: in.Project, KeepTagRevisions: in.KeepTagRevisions, KeepYoungerThan: d, Confirm: in.Confirm})
	if err != nil {
		code, reason := http.StatusInternalServerError, api.ReasonInternal
		if strings.HasPrefix(err.Error(), "--") {
			code, reason = http.StatusBadRequest, api.ReasonBadRequest
		}
		if errors.Is(err, errNoProject) {
			code, reason = http.StatusNotFound, api.ReasonNotFound
		}
		adminStatus(w, code, reason, "%v", err)
		return
	}
	adminJSON(w, http.StatusOK, rep)
}

func (r *Registry) serveGC(w http.ResponseWriter, req *http.Request) {
	var in GCRequest
	if !decodeBody(w, req, &in) {
		return
	}
	if !r.adminAllowed(w, req, "blobs", "") {
		return
	}
	g, ok := parseDuration(w, "--gc-grace", in.Grace)
	if !ok {
		return
	}
	rep, err := r.GC(req.Context(), GCOptions{Grace: g, DryRun: in.DryRun})
	if err != nil {
		adminStatus(w, http.StatusInternalServerError, api.ReasonInternal, "%v", err)
		return
	}
	adminJSON(w, http.StatusOK, rep)
}

func (r *Registry) serveWhy(w http.ResponseWriter, req *http.Request) {
	if !r.adminAllowed(w, req, "blobs", "") {
		return
	}
	g, ok := parseDuration(w, "--gc-grace", req.URL.Query().Get("grace"))
	if !ok {
		return
	}
	why, err := r.WhyBlob(req.Context(), req.PathValue("digest"), g)
	if err != nil {
		code, reason := http.StatusInternalServerError, api.ReasonInternal
		if strings.Contains(err.Error(), "is not a digest") {
			code, reason = http.StatusBadRequest, api.ReasonBadRequest
		}
		adminStatus(w, code, reason, "%v", err)
		return
	}
	adminJSON(w, http.StatusOK, why)
}
