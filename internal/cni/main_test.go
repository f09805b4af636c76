package cni

import (
	"os"
	"testing"
)

// TestMain lets the test binary double as the plugin: libcni runs it (through a
// symlink named "amime") with CNI_COMMAND set, and it must then behave exactly
// like the real binary instead of running the tests.
func TestMain(m *testing.M) {
	if os.Getenv("CNI_COMMAND") != "" {
		os.Exit(Main("amime cni test"))
	}
	os.Exit(m.Run())
}
