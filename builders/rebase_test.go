package builders

import (
	"errors"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

func layer(t *testing.T) v1.Layer {
	t.Helper()
	l, err := random.Layer(256, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func image(t *testing.T, history bool, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	for i, l := range layers {
		add := mutate.Addendum{Layer: l}
		if history {
			add.History = v1.History{CreatedBy: "layer " + string(rune('a'+i))}
		}
		var err error
		if img, err = mutate.Append(img, add); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

func digests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, l := range ls {
		d, _ := l.Digest()
		out = append(out, d)
	}
	return out
}

// TestRebaseSwapsBaseLayers: with and without history, the new image is the
// new base's layers and then exactly the app layers, and keeps the app's
// command.
func TestRebaseSwapsBaseLayers(t *testing.T) {
	for _, history := range []bool{true, false} {
		old1, old2, new1, app1, app2 := layer(t), layer(t), layer(t), layer(t), layer(t)
		oldBase := image(t, history, old1, old2)
		newBase := image(t, history, new1)
		orig := image(t, history, old1, old2, app1, app2)
		cfg, _ := orig.ConfigFile()
		cfg = cfg.DeepCopy()
		cfg.Config.Cmd = []string{"/app"}
		orig, _ = mutate.ConfigFile(orig, cfg)

		got, err := Rebase(orig, oldBase, newBase)
		if err != nil {
			t.Fatal(err)
		}
		if err := validate.Image(got); err != nil {
			t.Fatalf("history=%v: invalid image: %v", history, err)
		}
		want := []v1.Hash{digests(t, newBase)[0], digests(t, orig)[2], digests(t, orig)[3]}
		if d := digests(t, got); len(d) != 3 || d[0] != want[0] || d[1] != want[1] || d[2] != want[2] {
			t.Errorf("history=%v: layers = %v, want %v", history, d, want)
		}
		gc, _ := got.ConfigFile()
		if len(gc.Config.Cmd) != 1 || gc.Config.Cmd[0] != "/app" {
			t.Errorf("history=%v: cmd = %v", history, gc.Config.Cmd)
		}
		if history && (len(gc.History) != 3 || gc.History[1].CreatedBy != "layer c") {
			t.Errorf("history = %+v, want the new base's entry then the app's two", gc.History)
		}
		if mt, _ := got.MediaType(); mt != types.OCIManifestSchema1 {
			t.Errorf("media type = %s", mt)
		}
	}
}

// TestRebaseRefusesOtherBase: an image not built on the old base is not
// rebased, and the error says to build instead.
func TestRebaseRefusesOtherBase(t *testing.T) {
	oldBase := image(t, true, layer(t))
	orig := image(t, true, layer(t), layer(t))
	if _, err := Rebase(orig, oldBase, image(t, true, layer(t))); !errors.Is(err, errNoRebase) {
		t.Fatalf("err = %v, want errNoRebase", err)
	}
	if _, err := Rebase(image(t, true), image(t, true, layer(t)), oldBase); !errors.Is(err, errNoRebase) {
		t.Fatalf("err = %v, want errNoRebase for an image with fewer layers than the base", err)
	}
}
