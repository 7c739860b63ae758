package scan

import (
	"context"
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"slipway.dev/slipway/api"
)

// H5: the scanner scans an Image record only when its reference names the
// record's own digest in the record's own project of the integrated
// registry; a project admin can write Image records.
func TestOwnRef(t *testing.T) {
	c := &Controller{RegistryHost: "reg:5000"}
	d := "sha256:" + "ab"
	for _, tc := range []struct {
		name string
		ns   string
		ref  string
		want bool
	}{
		{"the registry's own record", "mal", "reg:5000/mal/app@" + d, true},
		{"a nested stream", "mal", "reg:5000/mal/team/app@" + d, true},
		{"H5 another digest", "mal", "reg:5000/mal/app@sha256:cd", false},
		{"H5 another project", "mal", "reg:5000/vic/app@" + d, false},
		{"H5 another registry", "mal", "evil.example/mal/app@" + d, false},
		{"H5 a project name prefix", "mal", "reg:5000/malware/app@" + d, false},
		{"H5 a tag", "mal", "reg:5000/mal/app:latest", false},
		{"H5 no stream", "mal", "reg:5000/mal/@" + d, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := &api.Image{ObjectMeta: api.ObjectMeta{Name: d, Namespace: tc.ns}, DockerImageReference: tc.ref}
			if got := c.ownRef(img); got != tc.want {
				t.Errorf("ownRef(%s in %s) = %v, want %v", tc.ref, tc.ns, got, tc.want)
			}
		})
	}
	if (&Controller{}).ownRef(&api.Image{ObjectMeta: api.ObjectMeta{Name: d, Namespace: "mal"}, DockerImageReference: "/mal/app@" + d}) {
		t.Error("a controller without a registry host scanned a record")
	}
}

// fetchOnly fails every call and counts database fetches.
type fetchOnly struct{ fetched []string }

func (f *fetchOnly) Image(context.Context, string) (v1.Image, error) { return nil, errors.New("no") }
func (f *fetchOnly) PutSBOM(context.Context, string, []byte) (string, error) {
	return "", errors.New("no")
}
func (f *fetchOnly) GetSBOM(context.Context, string, string) ([]byte, error) {
	return nil, errors.New("no")
}
func (f *fetchOnly) Fetch(_ context.Context, ref, _ string) error {
	f.fetched = append(f.fetched, ref)
	return errors.New("no such artifact")
}

// M1: the database is loaded only from the reserved project vulndb, which
// users cannot create; an artifact in any other project is not even
// fetched.
func TestDatabaseOnlyFromVulnDB(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
		fetched         bool
	}{
		{"M1 a user's project", "reg:5000/mal/osv@sha256:" + strings.Repeat("1", 64), "not in project vulndb", false},
		{"M1 another registry", "evil.example/vulndb/osv@sha256:" + strings.Repeat("1", 64), "not in project vulndb", false},
		{"M1 a project named like it", "reg:5000/vulndb2/osv@sha256:" + strings.Repeat("1", 64), "not in project vulndb", false},
		{"project vulndb", "reg:5000/vulndb/osv@sha256:" + strings.Repeat("1", 64), "no such artifact", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := &fetchOnly{}
			c := &Controller{Registry: reg, RegistryHost: "reg:5000"}
			v := &api.VulnerabilityDatabase{ObjectMeta: api.ObjectMeta{Name: DatabaseName, Annotations: map[string]string{DatabaseSourceAnnotation: tc.src}}}
			err := c.loadDB(context.Background(), v)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("loadDB(%s) = %v, want an error saying %q", tc.src, err, tc.want)
			}
			if got := len(reg.fetched) > 0; got != tc.fetched {
				t.Errorf("loadDB(%s) fetched=%v, want %v", tc.src, got, tc.fetched)
			}
		})
	}
}
