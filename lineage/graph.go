package lineage

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// NotVisibleMessage is what a hop the caller may not read says instead of its data.
const NotVisibleMessage = "not visible to you"

// Graph is what `slipway trace -o json` prints: nodes and the edges between
// them, in the order the trace found them. The structure is stable: fields
// are only ever added.
//
// A node's kind is one of Pod, ReplicationController, DeploymentConfig,
// Image, Build, BuildConfig, Commit, Scan, Finding, Signature, Attestation,
// SBOM, Referrer, Promotion. Its id is unique in the graph. A hop the caller
// may not read is a node with NotVisible set and no data beyond its name.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is one object on the path from a pod to its image's origins.
type Node struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Detail     string `json:"detail,omitempty"`
	NotVisible bool   `json:"notVisible,omitempty"`
}

// Edge says how From leads to To ("runs", "built by", "based on", ...).
type Edge struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Label string `json:"label"`
}

// add puts n in the graph once and returns its id.
func (g *Graph) add(n Node) string {
	if n.ID == "" {
		n.ID = strings.ToLower(n.Kind) + ":" + n.Namespace + "/" + n.Name
		if n.Digest != "" {
			n.ID = strings.ToLower(n.Kind) + ":" + n.Digest
		}
	}
	for _, m := range g.Nodes {
		if m.ID == n.ID {
			return n.ID
		}
	}
	g.Nodes = append(g.Nodes, n)
	return n.ID
}

func (g *Graph) link(from, to, label string) {
	for _, e := range g.Edges {
		if e.From == from && e.To == to {
			return
		}
	}
	g.Edges = append(g.Edges, Edge{From: from, To: to, Label: label})
}

// Node is the node id names, or a bare Node{ID: id} when there is none.
func (g *Graph) Node(id string) Node {
	for _, n := range g.Nodes {
		if n.ID == id {
			return n
		}
	}
	return Node{ID: id}
}

// title is the node's project, name and digest, each once.
func (n Node) title() string {
	s := n.Name
	if n.Namespace != "" && !strings.HasPrefix(s, n.Namespace+"/") {
		s = n.Namespace + "/" + s
	}
	if n.Digest != "" && !strings.Contains(s, n.Digest) {
		s += "@" + n.Digest
	}
	return s
}

// WriteTree prints the graph as an indented tree from each node nothing
// points to; a node reached twice is printed once and then referred to.
func WriteTree(w io.Writer, g *Graph) {
	into := map[string]bool{}
	out := map[string][]Edge{}
	for _, e := range g.Edges {
		into[e.To] = true
		out[e.From] = append(out[e.From], e)
	}
	printed := map[string]bool{}
	var walk func(id, label, indent string)
	walk = func(id, label, indent string) {
		n := g.Node(id)
		line := indent
		if label != "" {
			line += label + " → "
		}
		line += strings.ToLower(n.Kind) + " " + n.title()
		if n.Detail != "" {
			line += "  (" + n.Detail + ")"
		}
		if printed[id] && len(out[id]) > 0 {
			fmt.Fprintln(w, line+"  [see above]")
			return
		}
		fmt.Fprintln(w, line)
		printed[id] = true
		for _, e := range out[id] {
			walk(e.To, e.Label, indent+"  ")
		}
	}
	for _, n := range g.Nodes {
		if !into[n.ID] && !printed[n.ID] {
			walk(n.ID, "", "")
		}
	}
}

// WriteDot prints the graph for Graphviz.
func WriteDot(w io.Writer, g *Graph) {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) }
	fmt.Fprintln(w, "digraph trace {")
	fmt.Fprintln(w, "  rankdir=LR;\n  node [shape=box, fontsize=10];")
	for _, n := range g.Nodes {
		label := n.Kind + "\n" + n.title()
		if n.Detail != "" {
			label += "\n" + n.Detail
		}
		style := ""
		if n.NotVisible {
			style = ", style=dashed"
		}
		fmt.Fprintf(w, "  %s [label=%s%s];\n", q(n.ID), q(label), style)
	}
	for _, e := range g.Edges {
		fmt.Fprintf(w, "  %s -> %s [label=%s];\n", q(e.From), q(e.To), q(e.Label))
	}
	fmt.Fprintln(w, "}")
}
