package apiserver

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"

	"slipway.dev/slipway/api"
)

// FuzzDecodeStrict: the API's body path (readBody, then decodeStrict) never
// panics; every refusal is a 400, 413 or 415 Status; anything accepted was
// exactly one JSON object of the resource's kind, and it survives a round
// trip: encoding the decoded object and decoding it again, strictly, gives
// the same object.
//
//	go test -run='^$' -fuzz=FuzzDecodeStrict -fuzztime=20s ./apiserver/
func FuzzDecodeStrict(f *testing.F) {
	resources := []*api.Resource{api.Projects, api.ImageStreams, api.RoleBindings, api.Pipelines, api.BuildConfigs, api.Pods}
	for _, s := range []string{
		`{"kind":"Project","apiVersion":"v1","metadata":{"name":"p"}}`,
		`{"metadata":{"name":"s","namespace":"p"},"spec":{"tags":[{"name":"latest","from":{"kind":"DockerImage","name":"x/y:1"}}]}}`,
		`{"metadata":{"name":"b"},"roleRef":{"kind":"ClusterRole","name":"edit"},"subjects":[{"kind":"User","name":"u"}]}`,
		`{"metadata":{"name":"p"}} {"metadata":{"name":"q"}}`, `{"metadata":{"name":"p"}} x`, `{"metadata":{"name":"p"}}]`, `{}}`,
		`{"metadata":{"name":"p","bogus":1}}`, `{"kind":"Pod"}`, `{"apiVersion":"v2"}`, `[]`, `null`, `"x"`, `{"metadata":null}`,
		"kind: Project\nmetadata:\n  name: p\n", "a: 1\na: 2\n", "metadata: {name: p}\n---\nmetadata: {name: q}\n", "- 1\n- 2\n",
		"metadata:\n  name: &a p\n  namespace: *a\n", "? [a]\n: b\n", "{\"metadata\":{\"name\":\"\\ud800\"}}",
	} {
		for i := range resources {
			f.Add([]byte(s), uint8(i), s[0] != '{' && s[0] != '[')
		}
	}
	f.Fuzz(func(t *testing.T, body []byte, which uint8, asYAML bool) {
		res := resources[int(which)%len(resources)]
		req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		if asYAML {
			req.Header.Set("Content-Type", "application/yaml")
		}
		data, _, err := readBody(httptest.NewRecorder(), req, 1<<20, false)
		if err != nil {
			if st, ok := api.StatusFor(err); !ok || (st.Code != http.StatusBadRequest && st.Code != http.StatusRequestEntityTooLarge && st.Code != http.StatusUnsupportedMediaType) {
				t.Fatalf("readBody(%q) = %v, want a 400, 413 or 415 Status", body, err)
			}
			return
		}
		obj := res.New()
		if err := decodeStrict(res, data, obj); err != nil {
			if st, ok := api.StatusFor(err); !ok || st.Code != http.StatusBadRequest {
				t.Fatalf("decodeStrict(%s, %q) = %v, want a 400 Status", res.Kind, data, err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("decodeStrict(%s) accepted %q, which is not one JSON value", res.Kind, data)
		}
		if k := obj.GetTypeMeta().Kind; k != "" && k != res.Kind {
			t.Fatalf("decodeStrict(%s) accepted kind %q", res.Kind, k)
		}
		again, err := json.Marshal(obj)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", obj, err)
		}
		obj2 := res.New()
		if err := decodeStrict(res, again, obj2); err != nil {
			t.Fatalf("decodeStrict(%s) refuses its own re-encoding %s of %q: %v", res.Kind, again, data, err)
		}
		if !reflect.DeepEqual(obj, obj2) {
			t.Fatalf("round trip of %q changed the object:\n%+v\n%+v", data, obj, obj2)
		}
	})
}
