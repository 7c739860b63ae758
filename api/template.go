package api

import (
	"encoding/json"
	"regexp"
	"slices"
)

// Template is a list of objects with parameters, as OpenShift's
// template.openshift.io/v1 Template: `slipway process` substitutes the
// parameters and prints the objects, and `slipway new-app` creates them,
// labelled as one application. Objects are kept as written; they are
// checked as objects of their kind only when processed.
type Template struct {
	TypeMeta   `json:",inline"`
	ObjectMeta `json:"metadata"`
	// Message is shown after the template is instantiated, with its
	// parameters substituted (where to log in, which route, ...).
	Message string `json:"message,omitempty"`
	// Objects are the objects to create, each with apiVersion and kind.
	// A namespace in them is dropped unless it is a parameter reference:
	// objects land in the project they are instantiated in.
	Objects []json.RawMessage `json:"objects"`
	// Parameters are substituted into every string of every object:
	// ${NAME} as a string anywhere, and a whole value "${{NAME}}" as the
	// parameter's typed JSON value (a number for an int, true/false for a
	// bool).
	Parameters []TemplateParameter `json:"parameters,omitempty"`
	// Labels are added to every object.
	Labels map[string]string `json:"labels,omitempty"`
}

// TemplateParameter is one parameter of a Template.
type TemplateParameter struct {
	Name        string `json:"name"`
	DisplayName string `json:"displayName,omitempty"`
	Description string `json:"description,omitempty"`
	// Value is the default.
	Value string `json:"value,omitempty"`
	// Required parameters must end up with a non-empty value: given,
	// defaulted or generated.
	Required bool `json:"required,omitempty"`
	// Generate "expression" makes a value from the pattern in From when
	// none is given or defaulted, such as "[a-zA-Z0-9]{16}". The pattern
	// is OpenShift's subset: literal characters, classes in [] with
	// ranges, \w \d \a (letters) \A (symbols), each optionally followed by
	// {N}. New-app remembers generated values, so running it again keeps
	// them.
	Generate string `json:"generate,omitempty"`
	From     string `json:"from,omitempty"`
	// Type is string (default), int or bool; a value that is not of the
	// type is refused before anything is created.
	Type string `json:"type,omitempty"`
	// Enum, if set, lists the only values allowed.
	Enum []string `json:"enum,omitempty"`
	// Pattern, if set, is a regular expression a (non-empty) value must
	// match as a whole.
	Pattern string `json:"pattern,omitempty"`
	// Min and Max bound an int parameter.
	Min *int64 `json:"min,omitempty"`
	Max *int64 `json:"max,omitempty"`
}

// Parameter types.
const (
	ParamString = "string"
	ParamInt    = "int"
	ParamBool   = "bool"
)

// TemplateParamName is the form of a parameter name: upper-case letters,
// digits and underscores, starting with a letter, as OpenShift's
// templates use them.
var TemplateParamName = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)

// Templates are stored in a project and processed by the client.
var Templates = Register(&Resource{
	Name: "templates", Kind: "Template", Namespaced: true,
	New: func() Object { return &Template{} },
	Validate: func(o Object) FieldErrors {
		t := o.(*Template)
		var errs FieldErrors
		if len(t.Objects) == 0 {
			errs.Add("objects", FieldValueRequired, "a template needs at least one object")
		}
		for i, raw := range t.Objects {
			var head struct {
				Kind string `json:"kind"`
			}
			if err := json.Unmarshal(raw, &head); err != nil {
				errs.Add(fieldIndex("objects", i, ""), FieldValueInvalid, "not a JSON object: %v", err)
				continue
			}
			if r, ok := ForKind(head.Kind); !ok || r.Hidden {
				errs.Add(fieldIndex("objects", i, "kind"), FieldValueInvalid, "kind %q is unknown; see `slipway api-resources`", head.Kind)
			} else if r == Projects || !r.Namespaced {
				errs.Add(fieldIndex("objects", i, "kind"), FieldValueForbidden, "a template makes objects inside a project; %s is not one of them", head.Kind)
			}
		}
		seen := map[string]bool{}
		for i, p := range t.Parameters {
			f := func(field string) string { return fieldIndex("parameters", i, field) }
			if !TemplateParamName.MatchString(p.Name) {
				errs.Add(f("name"), FieldValueInvalid, "%q is not a parameter name: use upper-case letters, digits and _, starting with a letter", p.Name)
			}
			if seen[p.Name] {
				errs.Add(f("name"), FieldValueInvalid, "parameter %s is declared twice", p.Name)
			}
			seen[p.Name] = true
			if !slices.Contains([]string{"", ParamString, ParamInt, ParamBool}, p.Type) {
				errs.Add(f("type"), FieldValueInvalid, "type %q is unknown: use string, int or bool", p.Type)
			}
			switch p.Generate {
			case "":
				if p.From != "" {
					errs.Add(f("from"), FieldValueInvalid, "from is the pattern of generate: expression; set generate too")
				}
			case "expression":
				if p.From == "" {
					errs.Add(f("from"), FieldValueRequired, "generate: expression needs a pattern in from, such as [a-zA-Z0-9]{16}")
				}
			default:
				errs.Add(f("generate"), FieldValueInvalid, "generate %q is unknown: the only generator is expression", p.Generate)
			}
			if p.Pattern != "" {
				if _, err := regexp.Compile(p.Pattern); err != nil {
					errs.Add(f("pattern"), FieldValueInvalid, "not a regular expression: %v", err)
				}
			}
			if (p.Min != nil || p.Max != nil) && p.Type != ParamInt {
				errs.Add(f("min"), FieldValueInvalid, "min and max apply to int parameters; set type: int")
			}
			if p.Min != nil && p.Max != nil && *p.Min > *p.Max {
				errs.Add(f("max"), FieldValueInvalid, "max %d is below min %d", *p.Max, *p.Min)
			}
		}
		for k, v := range t.Labels {
			if k == "" || v == "" {
				errs.Add("labels", FieldValueInvalid, "label %q=%q: keys and values must not be empty", k, v)
			}
		}
		return errs
	},
})
