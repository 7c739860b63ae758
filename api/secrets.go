package api

import (
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Secret holds small pieces of sensitive data of a project, such as a
// webhook's secret, in the Kubernetes shape. Unlike the rest of a
// project, the view role cannot read secrets; edit and admin can.
type Secret struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	// Data is the secret's values by key (base64 in JSON).
	Data map[string][]byte `json:"data,omitempty"`
	// StringData is a write-only convenience: the API server folds it
	// into Data (its values win) and never stores or returns it.
	StringData map[string]string `json:"stringData,omitempty"`
	// Type is free-form, such as Opaque (default).
	Type string `json:"type,omitempty"`
}

// WebHookSecretKey is the key of a Secret that a build trigger's
// secretReference reads, as in OpenShift.
const WebHookSecretKey = "WebHookSecretKey"

// maxSecretBytes bounds a secret's data, as Kubernetes does (1 MiB).
const maxSecretBytes = 1 << 20

// Secrets is the resource.
var Secrets = Register(&Resource{
	Name: "secrets", Kind: "Secret", Namespaced: true,
	New: func() Object { return &Secret{} },
	Validate: func(o Object) FieldErrors {
		s := o.(*Secret)
		var errs FieldErrors
		size := 0
		check := func(field, k string, n int) {
			if msgs := validation.IsConfigMapKey(k); len(msgs) > 0 {
				errs.Add(field+"["+k+"]", FieldValueInvalid, "%s", strings.Join(msgs, "; "))
			}
			size += n
		}
		for k, v := range s.Data {
			check("data", k, len(v))
		}
		for k, v := range s.StringData {
			check("stringData", k, len(v))
		}
		if size > maxSecretBytes {
			errs.Add("data", FieldValueInvalid, "a secret holds at most 1 MiB; keep large data outside the cluster")
		}
		return errs
	},
	Columns: []Column{{Header: "TYPE", Path: "type"}},
})
