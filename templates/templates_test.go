package templates

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/api"
)

func i64(n int64) *int64 { return &n }

func tmpl(t *testing.T, objects []string, params ...api.TemplateParameter) *api.Template {
	t.Helper()
	tp := &api.Template{ObjectMeta: api.ObjectMeta{Name: "app", Namespace: "p"}, Parameters: params, Labels: map[string]string{"template": "app"}}
	for _, o := range objects {
		tp.Objects = append(tp.Objects, json.RawMessage(o))
	}
	if err := api.Templates.ValidateObject(tp); err != nil {
		t.Fatalf("the test's template is invalid: %v", err)
	}
	return tp
}

func TestProcessSubstitutes(t *testing.T) {
	tp := tmpl(t, []string{
		`{"apiVersion":"v1","kind":"DeploymentConfig","metadata":{"name":"${NAME}","namespace":"elsewhere","labels":{"tier":"web"}},
		  "spec":{"replicas":"${{REPLICAS}}","paused":"${{PAUSED}}","template":{"spec":{"containers":[{"name":"c","image":"reg/${NAME}:${TAG}","env":[{"name":"X","value":"${{TAG}}-${UNKNOWN}"}]}]}}}}`,
	},
		api.TemplateParameter{Name: "NAME", Required: true},
		api.TemplateParameter{Name: "TAG", Value: "latest"},
		api.TemplateParameter{Name: "REPLICAS", Type: api.ParamInt, Value: "2"},
		api.TemplateParameter{Name: "PAUSED", Type: api.ParamBool, Value: "0"},
	)
	tp.Message = "deployed ${NAME} at ${TAG}"
	res, err := Process(tp, Options{Values: map[string]string{"NAME": "shop", "REPLICAS": "3"}, Labels: map[string]string{"app": "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(res.Objects[0])
	want := `{"apiVersion":"v1","kind":"DeploymentConfig","metadata":{"labels":{"app":"shop","template":"app","tier":"web"},"name":"shop"},` +
		`"spec":{"paused":false,"replicas":3,"template":{"spec":{"containers":[{"env":[{"name":"X","value":"latest-${UNKNOWN}"}],"image":"reg/shop:latest","name":"c"}]}}}}`
	if string(got) != want {
		t.Errorf("Process = %s\nwant      %s", got, want)
	}
	if res.Message != "deployed shop at latest" {
		t.Errorf("Message = %q", res.Message)
	}
	if diff := cmp.Diff(map[string]string{"NAME": "shop", "TAG": "latest", "REPLICAS": "3", "PAUSED": "false"}, res.Values); diff != "" {
		t.Errorf("Values (-want +got):\n%s", diff)
	}
}

func TestProcessRefusesBadParameters(t *testing.T) {
	obj := []string{`{"kind":"Service","metadata":{"name":"s"}}`}
	for _, tc := range []struct {
		name   string
		param  api.TemplateParameter
		values map[string]string
		want   string
	}{
		{"required missing", api.TemplateParameter{Name: "A", Required: true}, nil, "A is required: give it with -p A=VALUE"},
		{"unknown given", api.TemplateParameter{Name: "A"}, map[string]string{"B": "x"}, "has no parameter B; it has: A"},
		{"not an int", api.TemplateParameter{Name: "N", Type: api.ParamInt}, map[string]string{"N": "three"}, "not an integer"},
		{"below min", api.TemplateParameter{Name: "N", Type: api.ParamInt, Min: i64(1)}, map[string]string{"N": "0"}, "below the minimum 1"},
		{"above max", api.TemplateParameter{Name: "N", Type: api.ParamInt, Max: i64(9)}, map[string]string{"N": "10"}, "above the maximum 9"},
		{"not a bool", api.TemplateParameter{Name: "B", Type: api.ParamBool}, map[string]string{"B": "yes"}, "not true or false"},
		{"not in enum", api.TemplateParameter{Name: "E", Enum: []string{"a", "b"}}, map[string]string{"E": "c"}, "not one of a, b"},
		{"pattern is whole", api.TemplateParameter{Name: "P", Pattern: "[a-z]+"}, map[string]string{"P": "abc1"}, "does not match [a-z]+"},
		{"generated value checked too", api.TemplateParameter{Name: "G", Generate: "expression", From: "[0-9]{3}", Pattern: "[a-z]+"}, nil, "does not match [a-z]+"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Process(tmpl(t, obj, tc.param), Options{Values: tc.values})
			if err == nil || !errors.Is(err, ErrParameter) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Process = %v, %v; want ErrParameter saying %q", res, err, tc.want)
			}
		})
	}
}

func TestProcessReportsEveryProblemAtOnce(t *testing.T) {
	tp := tmpl(t, []string{`{"kind":"Service","metadata":{"name":"s"}}`},
		api.TemplateParameter{Name: "A", Required: true}, api.TemplateParameter{Name: "N", Type: api.ParamInt})
	_, err := Process(tp, Options{Values: map[string]string{"N": "x", "Z": "1"}})
	for _, want := range []string{"A is required", "not an integer", "no parameter Z"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Process error = %v; want it to say %q", err, want)
		}
	}
}

func TestGeneratedValuesAreRememberedNotRegenerated(t *testing.T) {
	tp := tmpl(t, []string{`{"kind":"Service","metadata":{"name":"s","annotations":{"pw":"${PASSWORD}"}}}`},
		api.TemplateParameter{Name: "PASSWORD", Generate: "expression", From: "[a-zA-Z0-9]{24}"})
	first, err := Process(tp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	pw := first.Values["PASSWORD"]
	if !regexp.MustCompile(`^[a-zA-Z0-9]{24}$`).MatchString(pw) {
		t.Fatalf("generated PASSWORD = %q; want 24 of [a-zA-Z0-9]", pw)
	}
	if diff := cmp.Diff([]string{"PASSWORD"}, first.Generated); diff != "" {
		t.Errorf("Generated (-want +got):\n%s", diff)
	}
	again, err := Process(tp, Options{Remembered: first.Values})
	if err != nil {
		t.Fatal(err)
	}
	if again.Values["PASSWORD"] != pw {
		t.Errorf("second run PASSWORD = %q; want the remembered %q", again.Values["PASSWORD"], pw)
	}
	fresh, _ := Process(tp, Options{})
	if fresh.Values["PASSWORD"] == pw {
		t.Errorf("a run without memory generated the same 24 characters %q", pw)
	}
	given, _ := Process(tp, Options{Values: map[string]string{"PASSWORD": "mine"}, Remembered: first.Values})
	if given.Values["PASSWORD"] != "mine" || len(given.Generated) != 0 {
		t.Errorf("a given value = %q (generated %v); want it to win over memory", given.Values["PASSWORD"], given.Generated)
	}
}

func TestGenerate(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want string // a regular expression the value must match
	}{
		{"[a-z]{8}", `^[a-z]{8}$`},
		{"[A-Z0-9]{4}-x", `^[A-Z0-9]{4}-x$`},
		{`\d{6}`, `^[0-9]{6}$`},
		{`\w{10}`, `^[a-zA-Z0-9_]{10}$`},
		{`\a{5}`, `^[a-zA-Z]{5}$`},
		{`[\d\a]{7}`, `^[0-9a-zA-Z]{7}$`},
		{`\A{3}`, "^[~!@#$%^&*()\\-_+={}\\[\\]\\\\|<,>.?/\"';:`]{3}$"},
		{"abc", "^abc$"},
	} {
		got, err := Generate(tc.expr)
		if err != nil || !regexp.MustCompile(tc.want).MatchString(got) {
			t.Errorf("Generate(%q) = %q, %v; want a match of %s", tc.expr, got, err, tc.want)
		}
	}
	for _, bad := range []string{"[a-z", "[z-a]{3}", "a{0}", "a{x}", "a{3", `x\`, "[]", "}", "a{5000}"} {
		if got, err := Generate(bad); err == nil {
			t.Errorf("Generate(%q) = %q, nil; want an error", bad, got)
		}
	}
}

func TestTemplateValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		t    api.Template
		want string
	}{
		{"no objects", api.Template{}, "at least one object"},
		{"unknown kind", api.Template{Objects: []json.RawMessage{json.RawMessage(`{"kind":"Nope"}`)}}, `kind "Nope" is unknown`},
		{"cluster kind", api.Template{Objects: []json.RawMessage{json.RawMessage(`{"kind":"Project"}`)}}, "makes objects inside a project"},
		{"bad name", api.Template{Objects: []json.RawMessage{json.RawMessage(`{"kind":"Service"}`)}, Parameters: []api.TemplateParameter{{Name: "lower"}}}, "not a parameter name"},
		{"twice", api.Template{Objects: []json.RawMessage{json.RawMessage(`{"kind":"Service"}`)}, Parameters: []api.TemplateParameter{{Name: "A"}, {Name: "A"}}}, "declared twice"},
		{"bad type", api.Template{Objects: []json.RawMessage{json.RawMessage(`{"kind":"Service"}`)}, Parameters: []api.TemplateParameter{{Name: "A", Type: "float"}}}, "use string, int or bool"},
		{"generate without from", api.Template{Objects: []json.RawMessage{json.RawMessage(`{"kind":"Service"}`)}, Parameters: []api.TemplateParameter{{Name: "A", Generate: "expression"}}}, "needs a pattern in from"},
		{"min on string", api.Template{Objects: []json.RawMessage{json.RawMessage(`{"kind":"Service"}`)}, Parameters: []api.TemplateParameter{{Name: "A", Min: i64(1)}}}, "set type: int"},
	} {
		tc.t.Name, tc.t.Namespace = "t", "p"
		err := api.Templates.ValidateObject(&tc.t)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ValidateObject = %v; want it to say %q", tc.name, err, tc.want)
		}
	}
}
