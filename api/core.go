package api

import (
	"strconv"
	"strings"
	"time"
)

// Project is a unit of tenancy: a namespace for every other resource, and the
// scope of RoleBindings.
type Project struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       ProjectSpec   `json:"spec"`
	Status     ProjectStatus `json:"status,omitempty"`
}

// ProjectSpec is what the project's admin sets.
type ProjectSpec struct {
	DisplayName string `json:"displayName,omitempty"`
	Description string `json:"description,omitempty"`
	// Public lets anonymous users pull this project's images. Default false.
	Public bool `json:"public,omitempty"`
}

// ProjectRequesterAnnotation on a Project names the user who created it.
// The API server sets it and keeps it: it is how projects per user are
// counted against the platform's cap.
const ProjectRequesterAnnotation = "openshift.io/requester"

// Project phases.
const (
	ProjectActive      = "Active"
	ProjectTerminating = "Terminating"
)

// ProjectStatus is set by the server.
type ProjectStatus struct {
	Phase string `json:"phase,omitempty"`
}

// User is a person who logs in, from the built-in admin or an htpasswd file.
// Passwords are not part of the resource.
type User struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	FullName   string   `json:"fullName,omitempty"`
	Identities []string `json:"identities,omitempty"` // "htpasswd:bob", "builtin:admin"
	Groups     []string `json:"groups,omitempty"`
}

// Token is a bearer token. Its name is derived from a hash of the secret,
// which is never stored. Tokens are written only by the identity package.
type Token struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Spec       TokenSpec `json:"spec"`
}

// TokenSpec says whom a token stands for and until when.
type TokenSpec struct {
	// User is a user name, or system:serviceaccount:PROJECT:NAME.
	User      string    `json:"user"`
	ExpiresAt time.Time `json:"expiresAt"`
	// Description says what the token was made for ("login", "build x-1").
	Description string `json:"description,omitempty"`
	// ServiceAccountUID binds a service account's token to that account:
	// a new account of the same name does not revive old tokens.
	ServiceAccountUID string `json:"serviceAccountUID,omitempty"`
}

// ServiceAccount is a robot identity inside a project: builds, nodes, CI.
type ServiceAccount struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
}

// ServiceAccountPrefix starts the subject name of every service account.
const ServiceAccountPrefix = "system:serviceaccount:"

// ServiceAccountUser is the subject name of a service account.
func ServiceAccountUser(project, name string) string {
	return ServiceAccountPrefix + project + ":" + name
}

// SplitServiceAccountUser reverses ServiceAccountUser.
func SplitServiceAccountUser(user string) (project, name string, ok bool) {
	rest, ok := strings.CutPrefix(user, ServiceAccountPrefix)
	if !ok {
		return "", "", false
	}
	project, name, ok = strings.Cut(rest, ":")
	return project, name, ok && project != "" && name != ""
}

// TokenRequest is the body and answer of POST .../serviceaccounts/NAME/token.
type TokenRequest struct {
	TypeMeta `json:",inline"`
	Spec     TokenRequestSpec   `json:"spec"`
	Status   TokenRequestStatus `json:"status,omitempty"`
}

// TokenRequestSpec asks for a lifetime; zero means the server default.
type TokenRequestSpec struct {
	ExpirationSeconds int64 `json:"expirationSeconds,omitempty"`
}

// TokenRequestStatus carries the new secret, shown once.
type TokenRequestStatus struct {
	Token               string    `json:"token"`
	ExpirationTimestamp time.Time `json:"expirationTimestamp"`
}

// PolicyRule grants verbs on resources. "*" matches every verb or resource;
// "builds/*" matches every subresource of builds.
type PolicyRule struct {
	Verbs     []string `json:"verbs"`
	Resources []string `json:"resources"`
	// ResourceNames limits the rule to these names. Empty means all.
	ResourceNames []string `json:"resourceNames,omitempty"`
}

// Role is a set of rules that can be bound inside one project.
type Role struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Rules      []PolicyRule `json:"rules"`
}

// ClusterRole is a set of rules that can be bound in any project, or
// cluster-wide by a ClusterRoleBinding.
type ClusterRole struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	Rules      []PolicyRule `json:"rules"`
}

// RoleRef names the role a binding grants.
type RoleRef struct {
	Kind string `json:"kind"` // ClusterRole or Role
	Name string `json:"name"`
}

// Subject kinds.
const (
	SubjectUser           = "User"
	SubjectGroup          = "Group"
	SubjectServiceAccount = "ServiceAccount"
)

// Subject is whom a binding grants a role to.
type Subject struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"` // service accounts only
}

// RoleBinding grants a role to subjects inside one project.
type RoleBinding struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	RoleRef    RoleRef   `json:"roleRef"`
	Subjects   []Subject `json:"subjects"`
}

// ClusterRoleBinding grants a ClusterRole everywhere.
type ClusterRoleBinding struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	RoleRef    RoleRef   `json:"roleRef"`
	Subjects   []Subject `json:"subjects"`
}

// The resources of the foundation.
var (
	Projects = Register(&Resource{
		Name: "projects", Kind: "Project", ShortNames: []string{"project", "proj"},
		HasStatus: true,
		New:       func() Object { return &Project{} },
		Columns: []Column{
			{Header: "DISPLAY NAME", Path: "spec.displayName"},
			{Header: "STATUS", Path: "status.phase"},
		},
	})
	Users = Register(&Resource{
		Name: "users", Kind: "User", ShortNames: []string{"user"},
		New:          func() Object { return &User{} },
		ValidateName: ValidateUserName,
		Columns:      []Column{{Header: "FULL NAME", Path: "fullName"}, {Header: "IDENTITIES", Path: "identities"}},
	})
	Tokens = Register(&Resource{
		Name: "tokens", Kind: "Token", Hidden: true,
		New: func() Object { return &Token{} },
	})
	ServiceAccounts = Register(&Resource{
		Name: "serviceaccounts", Kind: "ServiceAccount", ShortNames: []string{"sa"},
		Namespaced: true,
		New:        func() Object { return &ServiceAccount{} },
	})
	Roles = Register(&Resource{
		Name: "roles", Kind: "Role", Namespaced: true,
		New:      func() Object { return &Role{} },
		Validate: func(o Object) FieldErrors { return validateRules(o.(*Role).Rules) },
	})
	ClusterRoles = Register(&Resource{
		Name: "clusterroles", Kind: "ClusterRole",
		New:      func() Object { return &ClusterRole{} },
		Validate: func(o Object) FieldErrors { return validateRules(o.(*ClusterRole).Rules) },
	})
	RoleBindings = Register(&Resource{
		Name: "rolebindings", Kind: "RoleBinding", ShortNames: []string{"rb"},
		Namespaced: true,
		New:        func() Object { return &RoleBinding{} },
		Validate: func(o Object) FieldErrors {
			b := o.(*RoleBinding)
			return validateBinding(b.RoleRef, b.Subjects, true)
		},
		Columns: []Column{{Header: "ROLE", Path: "roleRef.name"}, {Header: "SUBJECTS", Path: "subjects", Wide: true}},
	})
	ClusterRoleBindings = Register(&Resource{
		Name: "clusterrolebindings", Kind: "ClusterRoleBinding",
		New: func() Object { return &ClusterRoleBinding{} },
		Validate: func(o Object) FieldErrors {
			b := o.(*ClusterRoleBinding)
			return validateBinding(b.RoleRef, b.Subjects, false)
		},
		Columns: []Column{{Header: "ROLE", Path: "roleRef.name"}, {Header: "SUBJECTS", Path: "subjects", Wide: true}},
	})
)

func validateRules(rules []PolicyRule) FieldErrors {
	var errs FieldErrors
	for i, r := range rules {
		if len(r.Verbs) == 0 {
			errs.Add(fieldIndex("rules", i, "verbs"), FieldValueRequired, "at least one verb is required")
		}
		if len(r.Resources) == 0 {
			errs.Add(fieldIndex("rules", i, "resources"), FieldValueRequired, "at least one resource is required")
		}
	}
	return errs
}

func validateBinding(ref RoleRef, subjects []Subject, namespaced bool) FieldErrors {
	var errs FieldErrors
	switch {
	case ref.Kind == "ClusterRole":
	case ref.Kind == "Role" && namespaced:
	default:
		errs.Add("roleRef.kind", FieldValueInvalid, "must be ClusterRole%s, not %q", map[bool]string{true: " or Role"}[namespaced], ref.Kind)
	}
	if ref.Name == "" {
		errs.Add("roleRef.name", FieldValueRequired, "name the role to bind")
	}
	if len(subjects) == 0 {
		errs.Add("subjects", FieldValueRequired, "at least one subject is required")
	}
	for i, s := range subjects {
		switch s.Kind {
		case SubjectUser, SubjectGroup:
			if s.Name == "" {
				errs.Add(fieldIndex("subjects", i, "name"), FieldValueRequired, "a name is required")
			}
		case SubjectServiceAccount:
			if s.Name == "" {
				errs.Add(fieldIndex("subjects", i, "name"), FieldValueRequired, "a name is required")
			}
			if !namespaced && s.Namespace == "" {
				errs.Add(fieldIndex("subjects", i, "namespace"), FieldValueRequired, "service accounts need a namespace")
			}
		default:
			errs.Add(fieldIndex("subjects", i, "kind"), FieldValueInvalid, "must be User, Group or ServiceAccount, not %q", s.Kind)
		}
	}
	return errs
}

func fieldIndex(list string, i int, field string) string {
	return list + "[" + strconv.Itoa(i) + "]." + field
}
