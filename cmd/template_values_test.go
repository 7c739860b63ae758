package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A param file with a line over the scanner's limit is refused, not read
// up to that line with the values after it dropped.
func TestParamFileWithAnOversizedLineIsRefused(t *testing.T) {
	f := filepath.Join(t.TempDir(), "params")
	body := "A=1\nBIG=" + strings.Repeat("x", 100<<10) + "\nC=3\n"
	if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	tf := templateFlags{paramFiles: []string{f}}
	vals, err := tf.values()
	if err == nil || !strings.Contains(err.Error(), "--param-file") {
		t.Fatalf("values() = %v, %v; want an error naming --param-file", vals, err)
	}
	ok := filepath.Join(t.TempDir(), "ok")
	os.WriteFile(ok, []byte("# comment\nA=1\nB = two=2\n"), 0o600)
	tf = templateFlags{paramFiles: []string{ok}, params: []string{"A=given"}}
	vals, err = tf.values()
	if err != nil || vals["A"] != "given" || vals["B"] != " two=2" {
		t.Fatalf("values() = %v, %v; want A=given (-p wins) and B=\" two=2\"", vals, err)
	}
}
