package atomicfile

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// entries lists a directory's names, sorted.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	sort.Strings(names)
	return names
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name string
		data string
		mode os.FileMode
	}{
		{"0644", "hello\n", 0o644},
		{"0600", "secret", 0o600},
		{"0755", "#!/bin/sh\n", 0o755},
		{"0400", "read only", 0o400},
		{"empty content", "", 0o644},
		{"binary", "\x00\x01\xff", 0o640},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			path := filepath.Join(root, "a", "b", "c", "file")
			if err := Write(path, []byte(tt.data), tt.mode); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.data {
				t.Errorf("content = %q, want %q", b, tt.data)
			}
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			// The mode is exact (chmod, not subject to the umask).
			if st.Mode() != tt.mode {
				t.Errorf("mode = %v, want %v", st.Mode(), tt.mode)
			}
			if got := entries(t, filepath.Dir(path)); len(got) != 1 || got[0] != "file" {
				t.Errorf("directory holds %q, want only file", got)
			}
			dst, err := os.Stat(filepath.Join(root, "a"))
			if err != nil || !dst.IsDir() {
				t.Fatalf("parent directory not created: %v", err)
			}
		})
	}
}

func TestWriteReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")
	if err := os.WriteFile(path, []byte("a much longer original content"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if string(b) != "short" {
		t.Errorf("content = %q, want %q", b, "short")
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if after.Mode() != 0o600 {
		t.Errorf("mode = %v, want 0600 (the new mode, not the old file's)", after.Mode())
	}
	// A rename, not an in-place write: readers holding the old file keep it whole.
	if os.SameFile(before, after) {
		t.Error("file replaced in place, not renamed over")
	}

	for i := range 5 {
		if err := Write(path, []byte(strings.Repeat("x", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, _ = os.ReadFile(path)
	if string(b) != "xxxx" {
		t.Errorf("content after several writes = %q", b)
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "config.json" {
		t.Errorf("directory holds %q, want only config.json (no temporary files)", got)
	}
}

func TestWriteKeepsOpenReadersWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := Write(path, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := Write(path, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, _ := f.Read(buf)
	if string(buf[:n]) != "old content" {
		t.Errorf("open reader sees %q, want the old content whole", buf[:n])
	}
}

func TestWriteErrors(t *testing.T) {
	t.Run("parent is a file", func(t *testing.T) {
		dir := t.TempDir()
		blocker := filepath.Join(dir, "blocker")
		if err := os.WriteFile(blocker, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := Write(filepath.Join(blocker, "f"), []byte("y"), 0o644)
		if err == nil {
			t.Fatal("Write under a regular file succeeded")
		}
		if !strings.Contains(err.Error(), filepath.Join(blocker, "f")) {
			t.Errorf("error %q does not name the path", err)
		}
	})
	t.Run("target is a directory", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "sub")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(target, "keep"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		err := Write(target, []byte("y"), 0o644)
		if err == nil {
			t.Fatal("Write over a non-empty directory succeeded")
		}
		if !strings.HasPrefix(err.Error(), "write "+target+": ") {
			t.Errorf("error %q does not start with the path", err)
		}
		// The temporary file is cleaned up.
		if got := entries(t, dir); len(got) != 1 || got[0] != "sub" {
			t.Errorf("directory holds %q after a failed write, want only sub", got)
		}
	})
}
