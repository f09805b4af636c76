package proxy

import (
	"bytes"
	"encoding/json"
	"testing"

	"amime.dev/amime/internal/golden"
)

// goldenJSON compares v, as indented JSON, with testdata/<name>.golden.
func goldenJSON(t *testing.T, name string, v any) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, name, buf.String())
}
