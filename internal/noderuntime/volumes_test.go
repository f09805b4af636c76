package noderuntime

import (
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	corev1 "k8s.io/api/core/v1"
)

func TestSelectItems(t *testing.T) {
	data := map[string][]byte{"a": []byte("A"), "b": []byte("B"), "c": []byte("C")}
	tests := []struct {
		name  string
		data  map[string][]byte
		items []corev1.KeyToPath
		want  map[string][]byte
	}{
		{name: "no items: all keys", data: data, want: data},
		{name: "nil data", data: nil, want: nil},
		{
			name: "items select and rename", data: data,
			items: []corev1.KeyToPath{{Key: "a", Path: "conf/a.txt"}, {Key: "c", Path: "c"}},
			want:  map[string][]byte{"conf/a.txt": []byte("A"), "c": []byte("C")},
		},
		{
			name: "missing keys are skipped", data: data,
			items: []corev1.KeyToPath{{Key: "zz", Path: "zz"}, {Key: "b", Path: "bee"}},
			want:  map[string][]byte{"bee": []byte("B")},
		},
		{
			name: "one key to two paths", data: data,
			items: []corev1.KeyToPath{{Key: "a", Path: "x"}, {Key: "a", Path: "y"}},
			want:  map[string][]byte{"x": []byte("A"), "y": []byte("A")},
		},
		{
			name: "items on nil data", data: nil,
			items: []corev1.KeyToPath{{Key: "a", Path: "a"}},
			want:  map[string][]byte{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := selectItems(tt.data, tt.items)
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("selectItems() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// readTree returns every file under dir (relative path → content), failing on
// leftover temporary files.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if strings.Contains(d.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWriteVolumeFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "volumes", "config")

	// First fill: creates the directory and the files, nested paths included.
	files := map[string][]byte{
		"app.yaml":      []byte("a: 1\n"),
		"nested/deep/x": []byte("x"),
		"empty":         {},
	}
	if err := writeVolumeFiles(dir, files); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"app.yaml": "a: 1\n", "nested/deep/x": "x", "empty": ""}
	if diff := cmp.Diff(want, readTree(t, dir)); diff != "" {
		t.Fatalf("after first write (-want +got):\n%s", diff)
	}
	st, err := os.Stat(filepath.Join(dir, "app.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o644 {
		t.Errorf("mode = %v, want 0644", st.Mode().Perm())
	}

	// Second fill: changed content, a removed key, a new key.
	if err := writeVolumeFiles(dir, map[string][]byte{
		"app.yaml": []byte("a: 2\n"),
		"new":      []byte("n"),
	}); err != nil {
		t.Fatal(err)
	}
	want = map[string]string{"app.yaml": "a: 2\n", "new": "n"}
	if diff := cmp.Diff(want, readTree(t, dir)); diff != "" {
		t.Fatalf("after update (-want +got):\n%s", diff)
	}

	// A file put there by someone else disappears too: the volume holds exactly the keys.
	if err := os.WriteFile(filepath.Join(dir, "stray"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeVolumeFiles(dir, nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{}, readTree(t, dir)); diff != "" {
		t.Fatalf("after emptying (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("volume directory removed: %v", err)
	}
}

func TestWriteVolumeFilesUncleanKeys(t *testing.T) {
	dir := t.TempDir()
	// Keys that are not clean paths name the same files as their clean form and
	// must not be removed as stale right after being written.
	if err := writeVolumeFiles(dir, map[string][]byte{"./a": []byte("A"), "sub//b": []byte("B")}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"a": "A", "sub/b": "B"}, readTree(t, dir)); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestWriteVolumeFilesRejectsDotDot(t *testing.T) {
	for _, rel := range []string{"..", "../escape", "a/../../escape", "a/.."} {
		t.Run(rel, func(t *testing.T) {
			root := t.TempDir()
			dir := filepath.Join(root, "vol")
			err := writeVolumeFiles(dir, map[string][]byte{rel: []byte("x")})
			if err == nil {
				t.Fatal("want an error")
			}
			if want := `path "` + rel + `" must not contain '..'`; err.Error() != want {
				t.Errorf("error = %q, want %q", err, want)
			}
			var names []string
			_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					names = append(names, p)
				}
				return nil
			})
			sort.Strings(names)
			if len(names) != 0 {
				t.Errorf("files written despite the error: %q", names)
			}
		})
	}
}
