package cmd

import (
	"testing"

	"github.com/spf13/cobra"
)

// Every command a user can run shows an example in --help, and every
// command that lists (get) offers -o json and yaml.
func TestEveryCommandHasAnExample(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "completion" || sub.Name() == "help" {
				continue
			}
			if sub.Runnable() && sub.Example == "" {
				t.Errorf("%s has no Example in its --help", sub.CommandPath())
			}
			walk(sub)
		}
	}
	walk(Root())
}

func TestGetOffersOutputFormats(t *testing.T) {
	get, _, err := Root().Find([]string{"get"})
	if err != nil {
		t.Fatal(err)
	}
	f := get.Flags().Lookup("output")
	if f == nil || f.Shorthand != "o" {
		t.Fatalf("get has no -o/--output flag")
	}
	for _, want := range []string{"json", "yaml", "wide", "name"} {
		if _, err := newPrinter(nil, want, nil, false); err != nil {
			t.Errorf("newPrinter(%q) = %v, want it accepted", want, err)
		}
	}
	if _, err := newPrinter(nil, "xml", nil, false); err == nil {
		t.Errorf("newPrinter(xml) accepted, want an error naming the formats")
	}
}
