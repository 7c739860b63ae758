package cmd

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"slipway.dev/slipway/lineage"
)

// TestTraceWriteGraph: -o json prints empty lists, never null, and
// round-trips; -o dot is Graphviz; another format is a usage error.
func TestTraceWriteGraph(t *testing.T) {
	var empty bytes.Buffer
	if err := writeGraph(&empty, &lineage.Graph{}, "json"); err != nil {
		t.Fatal(err)
	}
	if s := empty.String(); !strings.Contains(s, `"nodes": []`) || !strings.Contains(s, `"edges": []`) {
		t.Errorf("-o json of an empty trace = %s, want empty lists", s)
	}
	g := lineage.Graph{
		Nodes: []lineage.Node{{ID: "pod:shop/web-1", Kind: "Pod", Namespace: "shop", Name: "web-1"}, {ID: "image:sha256:1", Kind: "Image", Name: "shop/web", Digest: "sha256:1", NotVisible: true, Detail: lineage.NotVisibleMessage}},
		Edges: []lineage.Edge{{From: "pod:shop/web-1", To: "image:sha256:1", Label: "runs web"}},
	}
	var js bytes.Buffer
	if err := writeGraph(&js, &g, "json"); err != nil {
		t.Fatal(err)
	}
	var back lineage.Graph
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("-o json does not parse: %v\n%s", err, js.String())
	}
	if diff := cmp.Diff(g, back); diff != "" {
		t.Errorf("-o json round trip (-want +got):\n%s", diff)
	}
	var dot, tree bytes.Buffer
	if err := writeGraph(&dot, &g, "dot"); err != nil || !strings.HasPrefix(dot.String(), "digraph") || !strings.Contains(dot.String(), "style=dashed") {
		t.Errorf("-o dot = %v, %s; want a digraph with the hidden node dashed", err, dot.String())
	}
	if err := writeGraph(&tree, &g, ""); err != nil || !strings.HasPrefix(tree.String(), "pod shop/web-1\n  runs web → image shop/web@sha256:1  (not visible to you)") {
		t.Errorf("tree = %v, %q", err, tree.String())
	}
	if err := writeGraph(&tree, &g, "yaml"); err == nil {
		t.Error("-o yaml was accepted")
	}
}
