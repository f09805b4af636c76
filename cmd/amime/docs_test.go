package main

import (
	"bytes"
	"os"
	"testing"

	"amime.dev/amime/internal/golden"
)

// TestReferenceIsCurrent fails when docs/reference.md no longer matches the
// commands: run `make docs` (or this test with -update) to rewrite it.
func TestReferenceIsCurrent(t *testing.T) {
	var buf bytes.Buffer
	if err := writeReference(&buf, newRootCommand()); err != nil {
		t.Fatal(err)
	}
	const path = "../../docs/reference.md"
	if golden.Updating() {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, buf.Bytes()) {
		t.Errorf("docs/reference.md is stale: run `make docs`")
	}
}
