package apiserver

import (
	"net/http"
	"net/url"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"slipway.dev/slipway/api"
)

// APIPrefix is the root of every resource path.
const APIPrefix = "/apis/" + api.Group + "/" + api.Version

// requestInfo is what a resource path and method say about a request.
type requestInfo struct {
	Verb        string // get list watch create update patch delete
	Resource    *api.Resource
	Namespace   string
	Name        string
	Subresource string
}

// parseRequest reads
//
//	/apis/slipway.dev/v1/{resource}[/{name}[/{sub}]]
//	/apis/slipway.dev/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]
//
// and returns a Status error naming what is wrong with any other path.
func parseRequest(r *http.Request) (*requestInfo, error) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), APIPrefix+"/")
	if !ok {
		return nil, api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "no API at %s; resources live under %s/", r.URL.Path, APIPrefix)
	}
	// Split the escaped path, so that an escaped "/" or ".." inside a name
	// stays inside that name and is refused below, rather than moving the
	// request to another path.
	parts := strings.Split(strings.TrimSuffix(rest, "/"), "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "path segment %q is badly escaped", p)
		}
		parts[i] = u
	}
	info := &requestInfo{}
	if parts[0] == "namespaces" && len(parts) >= 3 {
		info.Namespace = parts[1]
		parts = parts[2:]
		if msgs := validation.IsDNS1123Label(info.Namespace); len(msgs) > 0 {
			return nil, invalidName("project", info.Namespace, msgs)
		}
	}
	if len(parts) > 3 || parts[0] == "" {
		return nil, api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "path %s is not a resource path", r.URL.Path)
	}
	res, ok := api.Lookup(parts[0])
	if !ok || res.Hidden || res.Name != parts[0] {
		return nil, api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "the server has no resource %q; see `slipway api-resources`", parts[0])
	}
	info.Resource = res
	if len(parts) > 1 {
		info.Name = parts[1]
		valid := res.ValidateName
		if valid == nil {
			valid = validation.IsDNS1123Label
		}
		if msgs := valid(info.Name); len(msgs) > 0 && !(res == api.Users && info.Name == "~") {
			return nil, invalidName(res.Kind, info.Name, msgs)
		}
	}
	if len(parts) > 2 {
		info.Subresource = parts[2]
	}
	if res.Namespaced && info.Namespace == "" && (info.Name != "" || r.Method != http.MethodGet) {
		return nil, api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "%s live in a project; use %s/namespaces/PROJECT/%s", res.Name, APIPrefix, res.Name)
	}
	if !res.Namespaced && info.Namespace != "" {
		return nil, api.NewStatus(http.StatusNotFound, api.ReasonNotFound, "%s are not in a project; use %s/%s", res.Name, APIPrefix, res.Name)
	}
	watch := r.URL.Query().Get("watch")
	switch r.Method {
	case http.MethodGet:
		switch {
		case watch == "true" || watch == "1":
			info.Verb = "watch"
		case info.Name == "":
			info.Verb = "list"
		default:
			info.Verb = "get"
		}
	case http.MethodPost:
		info.Verb = "create"
	case http.MethodPut:
		info.Verb = "update"
	case http.MethodPatch:
		info.Verb = "patch"
	case http.MethodDelete:
		info.Verb = "delete"
	default:
		return nil, api.NewStatus(http.StatusMethodNotAllowed, api.ReasonMethodNotAllow, "method %s is not allowed", r.Method)
	}
	if info.Name == "" && info.Verb != "list" && info.Verb != "watch" && info.Verb != "create" {
		return nil, api.NewStatus(http.StatusMethodNotAllowed, api.ReasonMethodNotAllow, "%s needs a name: %s/.../%s/NAME", r.Method, APIPrefix, res.Name)
	}
	return info, nil
}

func invalidName(what, name string, msgs []string) error {
	if len(name) > 70 {
		name = name[:70] + "…"
	}
	return api.NewStatus(http.StatusBadRequest, api.ReasonInvalid, "%q is not a valid %s name: %s", name, what, strings.Join(msgs, "; "))
}

// authzNamespace is the project an authorization decision is made in: a
// Project is authorized inside itself.
func (i *requestInfo) authzNamespace() string {
	if i.Resource == api.Projects {
		return i.Name
	}
	return i.Namespace
}
