package server

import (
	"encoding/json"
	"net/http"
	"time"

	"slipway.dev/slipway/api"
)

// retentionInterval is how often projects with retention annotations are
// pruned (registry.RetentionOnce).
const retentionInterval = time.Hour

// ServeHTTP serves the registry's administration (/admin/v1/: prune,
// garbage collection, blob holders) once the registry runs.
func (c *registryCleaner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reg := c.reg.Load()
	if reg == nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(api.NewStatus(http.StatusServiceUnavailable, api.ReasonUnavailable, "the registry is not running yet; try again"))
		return
	}
	reg.AdminHandler().ServeHTTP(w, r)
}
