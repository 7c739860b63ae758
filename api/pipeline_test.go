package api

import "testing"

func TestPromotedTagFor(t *testing.T) {
	pl := func(ns, name, owner string, stages ...PipelineStage) Object {
		p := &Pipeline{ObjectMeta: ObjectMeta{Name: name, Namespace: ns}, Spec: PipelineSpec{Stream: "app", Stages: stages}}
		if owner != "" {
			p.Annotations = map[string]string{PipelineOwnerAnnotation: owner}
		}
		return p
	}
	dev, prod := PipelineStage{Name: "dev", Project: "dev", Tag: "latest"}, PipelineStage{Name: "prod", Project: "prod", Tag: "prod"}
	vic := PipelineStage{Name: "vic", Project: "vic", Tag: "latest"}
	old := PipelineStage{Name: "old", Project: "vic", Tag: "old"}
	pipelines := []Object{
		pl("dev", "shop", "alice", dev, prod),
		pl("mal", "unowned", "", dev, old),      // written before owners were recorded
		pl("mal", "plant", "mallory", dev, vic), // mallory lost promote in vic
	}
	mayOwn := func(owner, project string) bool { return owner == "alice" }
	for _, tc := range []struct {
		project, tag string
		mayOwn       func(string, string) bool
		want         string
	}{
		{"prod", "prod", nil, "dev/shop"},
		{"prod", "prod", mayOwn, "dev/shop"},
		{"dev", "latest", nil, ""}, // the first stage receives pushes
		{"vic", "latest", nil, "mal/plant"},
		{"vic", "latest", mayOwn, ""},
		{"vic", "old", nil, ""}, // no recorded owner: owns nothing
		{"prod", "other", nil, ""},
	} {
		if got := PromotedTagFor(pipelines, tc.project, "app", tc.tag, tc.mayOwn); got != tc.want {
			t.Errorf("PromotedTagFor(%s/app:%s, mayOwn set %v) = %q, want %q", tc.project, tc.tag, tc.mayOwn != nil, got, tc.want)
		}
	}
	if got := PromotedTag(pipelines, "vic", "app", "latest"); got != "mal/plant" {
		t.Errorf("PromotedTag(vic/app:latest) = %q, want mal/plant (owned, no owner check)", got)
	}
}
