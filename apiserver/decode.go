package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"sigs.k8s.io/yaml"

	"slipway.dev/slipway/api"
)

// readBody reads a request body of at most max bytes and converts YAML to
// JSON. Oversized bodies are 413; anything unreadable is 400.
func readBody(w http.ResponseWriter, r *http.Request, max int64, allowPatch bool) ([]byte, bool, error) {
	if r.ContentLength > max {
		return nil, false, tooLarge(max)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, false, tooLarge(max)
		}
		return nil, false, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, false, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the request body is empty; send the object as JSON or YAML")
	}
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case mt == "" || mt == "application/json":
		return data, false, nil
	case mt == "application/merge-patch+json" && allowPatch:
		return data, true, nil
	case mt == "application/yaml" || mt == "application/x-yaml" || mt == "text/yaml":
		j, err := yaml.YAMLToJSONStrict(data)
		if err != nil {
			return nil, false, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the body is not valid YAML: %v", err)
		}
		return j, false, nil
	}
	want := "application/json or application/yaml"
	if allowPatch {
		want = "application/merge-patch+json"
	}
	return nil, false, api.NewStatus(http.StatusUnsupportedMediaType, api.ReasonUnsupportedType, "content type %q is not supported; send %s", ct, want)
}

func tooLarge(max int64) error {
	return api.NewStatus(http.StatusRequestEntityTooLarge, api.ReasonTooLarge, "the request body is larger than the limit of %d bytes (%d MiB); keep large data out of API objects", max, max>>20)
}

// decodeStrict decodes JSON into obj, refusing unknown fields, trailing data
// and a kind that does not belong to the resource.
func decodeStrict(res *api.Resource, data []byte, obj any) error {
	// The happy path parses once; only a failure pays for a second parse
	// that finds the most useful message (a wrong kind before the unknown
	// fields it brings).
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(obj)
	var probe struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err == nil {
		if tm, ok := obj.(interface{ GetTypeMeta() *api.TypeMeta }); ok {
			probe.Kind, probe.APIVersion = tm.GetTypeMeta().Kind, tm.GetTypeMeta().APIVersion
		}
	} else if perr := json.Unmarshal(data, &probe); perr != nil {
		return api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the body %s", jsonError(perr))
	}
	if probe.Kind != "" && probe.Kind != res.Kind {
		if _, known := api.ForKind(probe.Kind); !known {
			return api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "kind %q is unknown to this server; see `slipway api-resources`", probe.Kind)
		}
		return api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "kind %q cannot be sent to %s, which holds %s", probe.Kind, res.Name, res.Kind)
	}
	if probe.APIVersion != "" && probe.APIVersion != api.APIVersion {
		return api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "apiVersion %q is not served; use %q", probe.APIVersion, api.APIVersion)
	}
	if err != nil {
		st := api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "%s %s", res.Kind, jsonError(err))
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			st.Details = &api.StatusDetails{Kind: res.Kind, Causes: []api.StatusCause{{Reason: api.FieldValueNotFound, Field: strings.Trim(f, `"`), Message: "unknown field"}}}
		}
		return st
	}
	// Only white space may follow the object: More alone misses a stray
	// "}" or "]".
	if _, err := dec.Token(); err != io.EOF {
		return api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the body holds more than one JSON value, or text after the object; send one object per request")
	}
	return nil
}

func jsonError(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return "is not valid JSON: " + strings.TrimPrefix(se.Error(), "invalid character ") + " at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te) && te.Field == "":
		return "must be a JSON object, not a JSON " + te.Value
	case errors.As(err, &te):
		return "field " + te.Field + ": cannot hold a JSON " + te.Value
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(orig, patch []byte) ([]byte, error) {
	out, err := jsonpatch.MergePatch(orig, patch)
	if err != nil {
		return nil, api.NewStatus(http.StatusBadRequest, api.ReasonBadRequest, "the merge patch cannot be applied: %v", err)
	}
	return out, nil
}
