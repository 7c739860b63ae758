package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Status is the body of every error answer, in the Kubernetes shape.
type Status struct {
	TypeMeta `json:",inline"`
	Status   string         `json:"status"`
	Message  string         `json:"message"`
	Reason   string         `json:"reason,omitempty"`
	Details  *StatusDetails `json:"details,omitempty"`
	Code     int            `json:"code"`
}

// StatusDetails names the object an error is about and, for validation
// errors, each offending field.
type StatusDetails struct {
	Name   string        `json:"name,omitempty"`
	Kind   string        `json:"kind,omitempty"`
	Causes []StatusCause `json:"causes,omitempty"`
	// RetryAfterSeconds, on a 429, is how long to wait before trying
	// again (also sent as the Retry-After header).
	RetryAfterSeconds int `json:"retryAfterSeconds,omitempty"`
}

// StatusCause is one problem with one field.
type StatusCause struct {
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	Field   string `json:"field,omitempty"`
}

// Reasons carried by Status.
const (
	ReasonNotFound        = "NotFound"
	ReasonAlreadyExists   = "AlreadyExists"
	ReasonConflict        = "Conflict"
	ReasonInvalid         = "Invalid"
	ReasonBadRequest      = "BadRequest"
	ReasonUnauthorized    = "Unauthorized"
	ReasonForbidden       = "Forbidden"
	ReasonGone            = "Expired"
	ReasonTooLarge        = "RequestEntityTooLarge"
	ReasonMethodNotAllow  = "MethodNotAllowed"
	ReasonUnsupportedType = "UnsupportedMediaType"
	ReasonInternal        = "InternalError"
	ReasonUnavailable     = "ServiceUnavailable"
	ReasonTooManyRequests = "TooManyRequests"
)

// Error implements error so a Status can travel as one.
func (s *Status) Error() string { return s.Message }

// NewStatus builds a failure Status.
func NewStatus(code int, reason, format string, args ...any) *Status {
	return &Status{
		TypeMeta: TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   "Failure",
		Message:  fmt.Sprintf(format, args...),
		Reason:   reason,
		Code:     code,
	}
}

// StatusFor finds the Status in err's chain, if any.
func StatusFor(err error) (*Status, bool) {
	var s *Status
	if errors.As(err, &s) {
		return s, true
	}
	return nil, false
}

// IsReason reports whether err carries a Status with the given reason.
func IsReason(err error, reason string) bool {
	s, ok := StatusFor(err)
	return ok && s.Reason == reason
}

// IsNotFound reports whether err is a NotFound Status.
func IsNotFound(err error) bool { return IsReason(err, ReasonNotFound) }

// IsConflict reports whether err is a Conflict Status.
func IsConflict(err error) bool { return IsReason(err, ReasonConflict) }

// FieldError is one validation failure at a JSON field path such as
// "metadata.name" or "spec.subjects[0].kind".
type FieldError struct {
	Field  string
	Type   string // FieldValueInvalid, FieldValueRequired, ...
	Detail string
}

// Field error types.
const (
	FieldValueInvalid   = "FieldValueInvalid"
	FieldValueRequired  = "FieldValueRequired"
	FieldValueNotFound  = "FieldValueNotFound"
	FieldValueForbidden = "FieldValueForbidden"
)

// FieldErrors collects validation failures.
type FieldErrors []FieldError

// Add appends one failure.
func (fe *FieldErrors) Add(field, typ, format string, args ...any) {
	*fe = append(*fe, FieldError{Field: field, Type: typ, Detail: fmt.Sprintf(format, args...)})
}

// Invalid turns validation failures on one object into a 400 Invalid Status,
// or nil when there are none. It answers 400 rather than Kubernetes' 422 so
// that every kind of bad input gets the same code.
func (fe FieldErrors) Invalid(kind, name string) error {
	if len(fe) == 0 {
		return nil
	}
	var msgs []string
	causes := make([]StatusCause, 0, len(fe))
	for _, e := range fe {
		msgs = append(msgs, e.Field+": "+e.Detail)
		causes = append(causes, StatusCause{Reason: e.Type, Message: e.Detail, Field: e.Field})
	}
	s := NewStatus(http.StatusBadRequest, ReasonInvalid, "%s %q is invalid: %s", kind, name, strings.Join(msgs, "; "))
	s.Details = &StatusDetails{Name: name, Kind: kind, Causes: causes}
	return s
}

// IsAlreadyExists reports whether err is a 409 for a name that is taken.
func IsAlreadyExists(err error) bool { return IsReason(err, ReasonAlreadyExists) }
