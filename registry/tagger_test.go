package registry_test

// Spec tags made true by the server: tags across projects, aliases that
// follow their source, and failures recorded as tag conditions.

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"slipway.dev/slipway/api"
	"slipway.dev/slipway/registry"
)

// settle is how long the tests wait for the tagger at most. It is a
// deadline for polling, not a timing assertion.
const settle = 30 * time.Second

// eventually polls cond until it reports done or settle passes; then it
// fails with the last description cond gave.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(settle)
	last := ""
	for {
		ok, desc := cond()
		if ok {
			return
		}
		last = desc
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached after %v; last state: %s", what, settle, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tagStatus is the status of one tag ("" Tag when absent) and the stream's
// resourceVersion.
func (h *harness) tagStatus(t *testing.T, project, stream, tag string) (api.NamedTagEventList, string) {
	t.Helper()
	is, err := h.stream(t, project, stream)
	if err != nil {
		if api.IsNotFound(err) {
			return api.NamedTagEventList{}, ""
		}
		t.Fatalf("get imagestream %s/%s: %v", project, stream, err)
	}
	for _, tg := range is.Status.Tags {
		if tg.Tag == tag {
			return tg, is.ResourceVersion
		}
	}
	return api.NamedTagEventList{}, is.ResourceVersion
}

// waitHead waits until project/stream:tag points at dgst.
func (h *harness) waitHead(t *testing.T, project, stream, tag, dgst string) api.NamedTagEventList {
	t.Helper()
	var st api.NamedTagEventList
	eventually(t, fmt.Sprintf("%s/%s:%s at %s", project, stream, tag, dgst), func() (bool, string) {
		st, _ = h.tagStatus(t, project, stream, tag)
		return len(st.Items) > 0 && st.Items[0].Image == dgst, fmt.Sprintf("%+v", st)
	})
	return st
}

// waitFailed waits until project/stream:tag has a False condition and
// returns it.
func (h *harness) waitFailed(t *testing.T, project, stream, tag string) api.TagEventCondition {
	t.Helper()
	var st api.NamedTagEventList
	eventually(t, fmt.Sprintf("%s/%s:%s has a False condition", project, stream, tag), func() (bool, string) {
		st, _ = h.tagStatus(t, project, stream, tag)
		return len(st.Conditions) > 0 && st.Conditions[0].Status == "False", fmt.Sprintf("%+v", st)
	})
	return st.Conditions[0]
}

// pullSame pulls ref from the registry as u and checks its manifest bytes.
func (h *harness) pullSame(t *testing.T, u, ref string, want []byte) {
	t.Helper()
	got, dgst, err := h.pull(t, u, ref)
	if err != nil {
		t.Fatalf("pull %s as %s: %v", ref, u, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("pull %s: manifest %s (%d bytes) differs from the source's (%d bytes)", ref, dgst, len(got), len(want))
	}
}

// setSpecTag adds (or replaces) a spec tag on a stream as u, creating the
// stream when it does not exist.
func (h *harness) setSpecTag(t *testing.T, u, project, stream string, tag api.TagReference) error {
	t.Helper()
	cl := h.user(t, u)
	for attempt := 0; attempt < 10; attempt++ {
		o, err := cl.Get(ctxT(t), api.ImageStreams, project, stream)
		if api.IsNotFound(err) {
			is := &api.ImageStream{ObjectMeta: api.ObjectMeta{Name: stream, Namespace: project}, Spec: api.ImageStreamSpec{Tags: []api.TagReference{tag}}}
			err = cl.Create(ctxT(t), api.ImageStreams, is)
			if api.IsReason(err, api.ReasonAlreadyExists) {
				continue
			}
			return err
		}
		if err != nil {
			return err
		}
		is := o.(*api.ImageStream)
		var tags []api.TagReference
		for _, x := range is.Spec.Tags {
			if x.Name != tag.Name {
				tags = append(tags, x)
			}
		}
		is.Spec.Tags = append(tags, tag)
		err = cl.Update(ctxT(t), api.ImageStreams, is)
		if api.IsConflict(err) {
			continue
		}
		return err
	}
	return fmt.Errorf("%s/%s kept changing", project, stream)
}

func TestTagAcrossProjects(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "p1", false)
	h.project(t, "alice", "p2", false)
	h.project(t, "bob", "b1", false)

	img := randomImage(t)
	dgst := h.pushOK(t, "alice", "p1/app:v1", img)

	// alice claims someone else asked for the tag; the server knows better.
	err := h.setSpecTag(t, "alice", "p2", "app", api.TagReference{
		Name:        "prod",
		From:        &api.ObjectReference{Kind: "ImageStreamImage", Namespace: "p1", Name: "app@" + dgst},
		Annotations: map[string]string{registry.TaggedByAnnotation: "mallory"},
	})
	if err != nil {
		t.Fatalf("create spec tag p2/app:prod as alice: %v", err)
	}
	st := h.waitHead(t, "p2", "app", "prod", dgst)

	t.Run("pull gives the same manifest", func(t *testing.T) {
		h.pullSame(t, "alice", "p2/app:prod", rawManifest(t, img))
		// The layers were linked into p2/app, not just the manifest.
		r := h.do(t, req{method: "HEAD", path: "/v2/p2/app/blobs/" + layerDigest(t, img), user: "alice"})
		if r.code != 200 {
			t.Errorf("HEAD layer in p2/app: got %v, want 200", r)
		}
	})
	t.Run("image record exists in the target project", func(t *testing.T) {
		rec, err := h.image(t, "p2", dgst)
		if err != nil {
			t.Fatalf("image %s in p2: %v", dgst, err)
		}
		if rec.Namespace != "p2" {
			t.Errorf("image record namespace: got %q, want p2", rec.Namespace)
		}
	})
	t.Run("history names the writer, not the claimed author", func(t *testing.T) {
		if got, want := st.Items[0].By, "alice"; got != want {
			t.Errorf("history[0].by: got %q, want %q", got, want)
		}
		is, err := h.stream(t, "p2", "app")
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range is.Spec.Tags {
			if tg.Name == "prod" && tg.Annotations[registry.TaggedByAnnotation] != "alice" {
				t.Errorf("spec tag annotation %s: got %q, want alice", registry.TaggedByAnnotation, tg.Annotations[registry.TaggedByAnnotation])
			}
		}
	})
	t.Run("no condition is False after success", func(t *testing.T) {
		st, _ := h.tagStatus(t, "p2", "app", "prod")
		for _, c := range st.Conditions {
			if c.Status == "False" {
				t.Errorf("condition after a successful tag: %+v", c)
			}
		}
	})
	t.Run("a writer without pull rights in the source is refused", func(t *testing.T) {
		err := h.setSpecTag(t, "bob", "b1", "app", api.TagReference{
			Name: "stolen",
			From: &api.ObjectReference{Kind: "ImageStreamImage", Namespace: "p1", Name: "app@" + dgst},
		})
		if !api.IsReason(err, api.ReasonForbidden) {
			t.Fatalf("bob tagging from p1: got %v, want Forbidden", err)
		}
		if r := h.getManifest(t, "bob", "b1/app", dgst); r.code == 200 {
			t.Errorf("GET b1/app@%s after a refused spec tag: got %v, want no manifest", dgst, r)
		}
	})
}

func TestAliasFollows(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "p", false)

	img1, img2 := randomImage(t), randomImage(t)
	d1 := h.pushOK(t, "alice", "p/app:v1", img1)

	err := h.setSpecTag(t, "alice", "p", "app", api.TagReference{
		Name:  "stable",
		From:  &api.ObjectReference{Kind: "ImageStreamTag", Name: "app:v1"},
		Alias: true,
	})
	if err != nil {
		t.Fatalf("set alias: %v", err)
	}
	h.waitHead(t, "p", "app", "stable", d1)

	d2 := h.pushOK(t, "alice", "p/app:v1", img2)
	st := h.waitHead(t, "p", "app", "stable", d2)
	if len(st.Items) != 2 || st.Items[1].Image != d1 {
		t.Errorf("stable history: got %+v, want [%s %s]", st.Items, d2, d1)
	}
	h.pullSame(t, "alice", "p/app:stable", rawManifest(t, img2))

	// An alias in another stream of the project follows too.
	err = h.setSpecTag(t, "alice", "p", "other", api.TagReference{
		Name:  "tracking",
		From:  &api.ObjectReference{Kind: "ImageStreamTag", Name: "app:v1"},
		Alias: true,
	})
	if err != nil {
		t.Fatalf("set alias in another stream: %v", err)
	}
	h.waitHead(t, "p", "other", "tracking", d2)
	img3 := randomImage(t)
	d3 := h.pushOK(t, "alice", "p/app:v1", img3)
	h.waitHead(t, "p", "other", "tracking", d3)
	h.waitHead(t, "p", "app", "stable", d3)
	h.pullSame(t, "alice", "p/other:tracking", rawManifest(t, img3))
}

func TestTagErrorsRecorded(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "p", false)
	img := randomImage(t)
	dgst := h.pushOK(t, "alice", "p/app:v1", img)

	if err := h.setSpecTag(t, "alice", "p", "target", api.TagReference{
		Name: "alias",
		From: &api.ObjectReference{Kind: "ImageStreamTag", Name: "nosuch:v1"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.setSpecTag(t, "alice", "p", "target", api.TagReference{
		Name: "pinned",
		From: &api.ObjectReference{Kind: "ImageStreamImage", Name: "ghost@" + dgst},
	}); err != nil {
		t.Fatal(err)
	}

	for tag, source := range map[string]string{"alias": "nosuch", "pinned": "ghost"} {
		c := h.waitFailed(t, "p", "target", tag)
		if !strings.Contains(c.Message, source) {
			t.Errorf("condition of %s: message %q does not name the source %q", tag, c.Message, source)
		}
		if c.Reason == "" {
			t.Errorf("condition of %s has no reason: %+v", tag, c)
		}
	}
	t.Run("a digest its own stream does not have", func(t *testing.T) {
		missing := sha256Of([]byte("never pushed"))
		if err := h.setSpecTag(t, "alice", "p", "app", api.TagReference{
			Name: "pin",
			From: &api.ObjectReference{Kind: "ImageStreamImage", Name: "app@" + missing},
		}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "p/app:pin is refused", func() (bool, string) {
			st, _ := h.tagStatus(t, "p", "app", "pin")
			return len(st.Items) > 0 || (len(st.Conditions) > 0 && st.Conditions[0].Status == "False"), fmt.Sprintf("%+v", st)
		})
		st, _ := h.tagStatus(t, "p", "app", "pin")
		if len(st.Items) > 0 {
			r := h.getManifest(t, "alice", "p/app", "pin")
			t.Errorf("p/app:pin moved to %s, which the stream has no manifest for (GET by tag: %v; image record: %v)", st.Items[0].Image, r, func() error { _, err := h.image(t, "p", missing); return err }())
		}
	})
	if r := h.getManifest(t, "alice", "p/target", "pinned"); r.code == 200 {
		t.Errorf("GET p/target:pinned from a missing stream: got %v, want no manifest", r)
	}

	// No crash loop: once both conditions are written, the stream stops
	// changing.
	eventually(t, "status stops changing", func() (bool, string) {
		_, rv1 := h.tagStatus(t, "p", "target", "alias")
		time.Sleep(3 * time.Second)
		_, rv2 := h.tagStatus(t, "p", "target", "alias")
		return rv1 == rv2, fmt.Sprintf("resourceVersion %s then %s", rv1, rv2)
	})

	// Once the source exists, the same spec tag succeeds.
	h.pushOK(t, "alice", "p/nosuch:v1", img)
	h.waitHead(t, "p", "target", "alias", dgst)
	t.Run("a success clears the failure", func(t *testing.T) {
		eventually(t, "p/target:alias has no False condition", func() (bool, string) {
			st, _ := h.tagStatus(t, "p", "target", "alias")
			return len(st.Conditions) == 0 || st.Conditions[0].Status != "False", fmt.Sprintf("%+v", st.Conditions)
		})
	})
}

// L11: a spec tag that takes its image from another project is followed
// only while its author may still pull there: once the author's grant is
// removed, or the author deleted, the tag stays where it was and its
// condition says which grant is missing.
func TestSpecTagAuthorLosesPullRight(t *testing.T) {
	h := start(t)
	h.project(t, "alice", "p1", false)
	h.project(t, "bob", "b1", false)
	h.project(t, "carol", "c1", false)
	h.grant(t, "p1", "image-puller", "bob")
	h.grant(t, "p1", "image-puller", "carol")
	first := h.pushOK(t, "alice", "p1/app:v1", randomImage(t))
	mirror := api.TagReference{Name: "mirror", From: &api.ObjectReference{Kind: "ImageStreamTag", Namespace: "p1", Name: "app:v1"}}
	for _, u := range []string{"bob", "carol"} {
		if err := h.setSpecTag(t, u, map[string]string{"bob": "b1", "carol": "c1"}[u], "app", mirror); err != nil {
			t.Fatalf("%s mirrors p1/app:v1: %v", u, err)
		}
	}
	h.waitHead(t, "b1", "app", "mirror", first)
	h.waitHead(t, "c1", "app", "mirror", first)

	if _, err := h.env.Admin.Delete(ctxT(t), api.RoleBindings, "p1", "image-puller-bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.env.Admin.Delete(ctxT(t), api.Users, "", "carol"); err != nil {
		t.Fatal(err)
	}
	second := h.pushOK(t, "alice", "p1/app:v1", randomImage(t))
	for _, tc := range []struct{ project, want string }{
		{"b1", "bob may no longer pull from project p1"},
		{"c1", "user carol no longer exists"},
	} {
		c := h.waitFailed(t, tc.project, "app", "mirror")
		if c.Reason != "ImagePullDenied" || !strings.Contains(c.Message, tc.want) {
			t.Errorf("%s/app:mirror condition = %s %q, want ImagePullDenied saying %q", tc.project, c.Reason, c.Message, tc.want)
		}
		if st, _ := h.tagStatus(t, tc.project, "app", "mirror"); len(st.Items) == 0 || st.Items[0].Image != first {
			t.Errorf("%s/app:mirror = %+v, want it left at %s (not %s)", tc.project, st.Items, first, second)
		}
	}
}
