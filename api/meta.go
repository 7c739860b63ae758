// Package api holds Slipway's resource types: their shape, defaults and
// validation, and nothing else.
//
// Every resource has the Kubernetes shape (apiVersion, kind, metadata, spec,
// status) and is described by one Resource value in the registry. Adding a
// resource means declaring its type and calling Register once; the store, the
// REST handler, RBAC and the CLI pick it up from there.
package api

import (
	"time"
)

// Group and Version are the API group and version served by Slipway.
const (
	Group      = "slipway.dev"
	Version    = "v1"
	APIVersion = Group + "/" + Version
)

// TypeMeta names the kind of an object on the wire.
type TypeMeta struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
}

// ObjectMeta is the metadata every stored object carries.
//
// ResourceVersion is the etcd revision at which the object last changed; it is
// set by the store and is the precondition of a compare-and-swap update.
// Generation increases by one whenever spec changes.
type ObjectMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	ResourceVersion   string            `json:"resourceVersion,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	DeletionTimestamp *time.Time        `json:"deletionTimestamp,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

// Object is implemented by every resource type by embedding TypeMeta and
// ObjectMeta.
type Object interface {
	GetTypeMeta() *TypeMeta
	GetObjectMeta() *ObjectMeta
}

// GetTypeMeta implements Object.
func (t *TypeMeta) GetTypeMeta() *TypeMeta { return t }

// GetObjectMeta implements Object.
func (m *ObjectMeta) GetObjectMeta() *ObjectMeta { return m }

// ListMeta describes a list response. Continue is set when more items remain;
// pass it back to get the next page at the same revision.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty"`
	Continue        string `json:"continue,omitempty"`
}

// Event types of a watch stream.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
	Error    = "ERROR"
)
