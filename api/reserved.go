package api

import (
	"net/http"
	"strings"
)

// VulnDBProject holds the cluster's imported vulnerability databases
// (`slipway vulndb import`).
const VulnDBProject = "vulndb"

// Project names the platform keeps for itself: the ones it uses, and
// prefixes for the ones it may use later. Only a cluster admin (the
// platform's own tools run as one) may create such a project; a user who
// could would own what the platform keeps there, such as the vulnerability
// database.
var (
	reservedProjects        = []string{VulnDBProject}
	reservedProjectPrefixes = []string{"slipway-", "kube-", "openshift-"}
)

// ReservedProjectName says why name is reserved for the platform, or ""
// if anyone may create a project of that name.
func ReservedProjectName(name string) string {
	for _, r := range reservedProjects {
		if name == r {
			return "project " + name + " is the platform's"
		}
	}
	for _, p := range reservedProjectPrefixes {
		if strings.HasPrefix(name, p) {
			return "project names starting with " + p + " are reserved for the platform"
		}
	}
	return ""
}

// CheckProjectName refuses a reserved project name unless the creator is a
// cluster admin. The API server calls it when a project is created.
func CheckProjectName(name string, clusterAdmin bool) error {
	why := ReservedProjectName(name)
	if why == "" || clusterAdmin {
		return nil
	}
	return NewStatus(http.StatusForbidden, ReasonForbidden, "%s: only a cluster admin may create it; choose another name", why)
}
