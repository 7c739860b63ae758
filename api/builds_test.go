package api

import (
	"strings"
	"testing"
)

// TestBuildGitURI: Builds and BuildConfigs take only http(s) git URLs
// with a host, and bounded deadlines.
func TestBuildGitURI(t *testing.T) {
	out := BuildOutput{To: &ObjectReference{Kind: "ImageStreamTag", Name: "a:latest"}}
	neg, big, ok := int64(0), int64(MaxBuildDeadline.Seconds())+1, int64(60)
	for _, tc := range []struct {
		uri      string
		deadline *int64
		want     string // in the error; "" for valid
	}{
		{"https://github.com/org/repo.git", nil, ""},
		{"http://bob:pw@git.example.com/repo.git", &ok, ""},
		{"file:///etc", nil, "spec.source.git.uri"},
		{"/srv/git/repo.git", nil, "spec.source.git.uri"},
		{"ssh://git@github.com/org/repo", nil, "spec.source.git.uri"},
		{"git@github.com:org/repo.git", nil, "spec.source.git.uri"},
		{"git://10.0.0.1/repo", nil, "spec.source.git.uri"},
		{"https:///nohost", nil, "must name a host"},
		{"https://github.com/org/repo.git", &neg, "spec.completionDeadlineSeconds"},
		{"https://github.com/org/repo.git", &big, "spec.completionDeadlineSeconds"},
	} {
		src := BuildSource{Git: &GitBuildSource{URI: tc.uri}}
		b := &Build{ObjectMeta: ObjectMeta{Name: "b", Namespace: "p"}, Spec: BuildSpec{Source: src, Output: out, CompletionDeadlineSeconds: tc.deadline}}
		bc := &BuildConfig{ObjectMeta: ObjectMeta{Name: "b", Namespace: "p"}, Spec: BuildConfigSpec{Source: src, Output: out, Strategy: BuildStrategy{Type: "Docker"}, CompletionDeadlineSeconds: tc.deadline}}
		for _, c := range []struct {
			r *Resource
			o Object
		}{{Builds, b}, {BuildConfigs, bc}} {
			err := c.r.ValidateObject(c.o)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("%s %s: %v, want valid", c.r.Kind, tc.uri, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("%s %s: %v, want an error with %q", c.r.Kind, tc.uri, err, tc.want)
			}
		}
	}
	if got := RedactURI("https://bob:s3cret@git.example.com/r.git"); got != "https://git.example.com/r.git" {
		t.Errorf("RedactURI = %s", got)
	}
	if b := (&BuildSpec{}); b.Deadline() != DefaultBuildDeadline {
		t.Errorf("default deadline = %s", b.Deadline())
	}
}
