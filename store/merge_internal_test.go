package store

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"slipway.dev/slipway/api"
)

// fill sets every field v reaches to a value made from seed: strings,
// numbers, booleans, one element per slice and map, pointers allocated,
// down to a depth that stops recursive types.
func fill(v reflect.Value, seed, depth int) {
	if depth > 6 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), seed, depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 1, seed, 0, 0, 0, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), seed+i, depth+1)
			}
		}
	case reflect.Slice:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(fmt.Sprint("b", seed)))
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), seed, depth+1)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
		fill(k, seed, depth+1)
		fill(e, seed+1, depth+1)
		m.SetMapIndex(k, e)
		v.Set(m)
	case reflect.String:
		v.SetString(fmt.Sprint("s", seed))
	case reflect.Bool:
		v.SetBool(seed%2 == 0)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(seed % 100))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(seed % 100))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(seed) / 4)
	}
}

// TestMergeStatusIsMergeJSON: a status write merged on the types
// (mergeStatus) stores exactly the bytes the merge on the JSON stores, for
// every resource with a status: the stored spec and metadata kept (no
// resourceVersion), the new status taken, fields the type does not know
// dropped.
func TestMergeStatusIsMergeJSON(t *testing.T) {
	n := 0
	for _, r := range api.Resources() {
		if !r.HasStatus {
			continue
		}
		t.Run(r.Kind, func(t *testing.T) {
			old, obj := r.NewObject(), r.NewObject()
			fill(reflect.ValueOf(old).Elem(), 1, 0)
			fill(reflect.ValueOf(obj).Elem(), 7, 0)
			old.GetObjectMeta().ResourceVersion = ""
			stored, err := json.Marshal(old)
			if err != nil {
				t.Fatalf("%s: filled object does not encode: %v", r.Kind, err)
			}
			// A field of an older or newer version of the type.
			var m map[string]json.RawMessage
			if err := json.Unmarshal(stored, &m); err != nil {
				t.Fatal(err)
			}
			m["retiredField"] = json.RawMessage(`{"x":1}`)
			if stored, err = json.Marshal(m); err != nil {
				t.Fatal(err)
			}
			want, werr := mergeJSON(r, stored, obj, UpdateOptions{Status: true})
			got, ok, gerr := mergeStatus(r, stored, obj)
			if !ok {
				t.Fatalf("%s has a status but mergeStatus did not merge it", r.Kind)
			}
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("errors differ: mergeJSON %v, mergeStatus %v", werr, gerr)
			}
			if string(got) != string(want) {
				t.Errorf("mergeStatus:\n%s\nmergeJSON:\n%s", got, want)
			}
			// And it is a status write: spec as stored, status as sent.
			back := r.NewObject()
			if err := json.Unmarshal(got, back); err != nil {
				t.Fatal(err)
			}
			if st := reflect.ValueOf(back).Elem().FieldByName("Status"); !reflect.DeepEqual(st.Interface(), reflect.ValueOf(obj).Elem().FieldByName("Status").Interface()) {
				t.Errorf("status not taken from the write: %v", st)
			}
			if back.GetObjectMeta().UID != old.GetObjectMeta().UID {
				t.Errorf("metadata not kept: uid %q, stored %q", back.GetObjectMeta().UID, old.GetObjectMeta().UID)
			}
		})
		n++
	}
	if n < 5 {
		t.Fatalf("only %d resources with a status", n)
	}
}

// A corrupt stored object is an error either way.
func TestMergeStatusCorrupt(t *testing.T) {
	b := &api.Build{ObjectMeta: api.ObjectMeta{Name: "b"}}
	if _, ok, err := mergeStatus(api.Builds, []byte("{not json"), b); !ok || err == nil {
		t.Fatalf("mergeStatus of corrupt bytes: ok %v err %v, want an error", ok, err)
	}
}
