package noderuntime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	utilexec "k8s.io/utils/exec"
)

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func tailOf(t *testing.T, content string, n int) string {
	t.Helper()
	f, err := os.Open(writeTemp(t, content))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := seekTail(f, n); err != nil {
		t.Fatalf("seekTail(%d): %v", n, err)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func numberedLines(from, to int) string {
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "line %04d\n", i)
	}
	return b.String()
}

func TestSeekTail(t *testing.T) {
	long := strings.Repeat("x", 4095) + "\n" // exactly one 4096-byte read chunk per line
	tests := []struct {
		name    string
		content string
		n       int
		want    string
	}{
		{"tail 0", "a\nb\nc\n", 0, ""},
		{"tail 1", "a\nb\nc\n", 1, "c\n"},
		{"tail 2", "a\nb\nc\n", 2, "b\nc\n"},
		{"tail all lines", "a\nb\nc\n", 3, "a\nb\nc\n"},
		{"tail more than the file", "a\nb\nc\n", 10, "a\nb\nc\n"},
		{"no trailing newline, tail 1", "a\nb\nc", 1, "c"},
		{"no trailing newline, tail 2", "a\nb\nc", 2, "b\nc"},
		{"no trailing newline, tail 3", "a\nb\nc", 3, "a\nb\nc"},
		{"single line", "only\n", 1, "only\n"},
		{"single line without newline", "only", 1, "only"},
		{"empty file, tail 0", "", 0, ""},
		{"empty file, tail 1", "", 1, ""},
		{"empty lines, tail 1", "a\n\n\n", 1, "\n"},
		{"empty lines, tail 2", "a\n\n\n", 2, "\n\n"},
		{"empty lines, tail 3", "a\n\n\n", 3, "a\n\n\n"},
		{"many chunks, tail 1", numberedLines(0, 2000), 1, "line 1999\n"},
		{"many chunks, tail 1500", numberedLines(0, 2000), 1500, numberedLines(500, 2000)},
		{"many chunks, tail 1999", numberedLines(0, 2000), 1999, numberedLines(1, 2000)},
		{"many chunks, tail 2000", numberedLines(0, 2000), 2000, numberedLines(0, 2000)},
		{"newline at chunk edge, tail 1", long + long + long, 1, long},
		{"newline at chunk edge, tail 2", long + long + long, 2, long + long},
		{"newline at chunk edge, tail 3", long + long + long, 3, long + long + long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tailOf(t, tt.content, tt.n); got != tt.want {
				if len(got) > 80 || len(tt.want) > 80 {
					t.Errorf("seekTail(%d): got %d bytes, want %d bytes", tt.n, len(got), len(tt.want))
				} else {
					t.Errorf("seekTail(%d) then read = %q, want %q", tt.n, got, tt.want)
				}
			}
		})
	}
}

func TestStreamLog(t *testing.T) {
	content := "one\ntwo\nthree\n"
	tests := []struct {
		name  string
		tail  int
		limit int64
		want  string
	}{
		{"everything", -1, -1, content},
		{"tail 2", 2, -1, "two\nthree\n"},
		{"tail 0", 0, -1, ""},
		{"limit 5", -1, 5, "one\nt"},
		{"limit 0", -1, 0, ""},
		{"limit larger than the file", -1, 1000, content},
		{"tail 2, limit 3", 2, 3, "two"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := streamLog(context.Background(), &buf, writeTemp(t, content), tt.tail, tt.limit, false, func() bool { return false })
			if err != nil {
				t.Fatal(err)
			}
			if buf.String() != tt.want {
				t.Errorf("streamLog() wrote %q, want %q", buf.String(), tt.want)
			}
		})
	}
}

func TestStreamLogMissingFile(t *testing.T) {
	var buf bytes.Buffer
	if err := streamLog(context.Background(), &buf, filepath.Join(t.TempDir(), "nope.log"), -1, -1, true, func() bool { return true }); err != nil {
		t.Errorf("streamLog(missing file) = %v, want nil", err)
	}
	if buf.Len() != 0 {
		t.Errorf("wrote %q for a missing file", buf.String())
	}
}

func TestStreamLogFollow(t *testing.T) {
	p := writeTemp(t, "first\n")
	calls := 0
	running := func() bool {
		calls++
		if calls == 1 {
			// The container writes more, then stops.
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Error(err)
				return false
			}
			defer f.Close()
			io.WriteString(f, "second\n")
			return true
		}
		return false
	}
	var buf bytes.Buffer
	if err := streamLog(context.Background(), &buf, p, -1, -1, true, running); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "first\nsecond\n" {
		t.Errorf("followed %q, want %q", buf.String(), "first\nsecond\n")
	}
	if calls != 2 {
		t.Errorf("running() called %d times, want 2", calls)
	}
}

func TestStreamLogFollowStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var buf bytes.Buffer
	err := streamLog(ctx, &buf, writeTemp(t, "x\n"), -1, -1, true, func() bool { cancel(); return true })
	if err != nil || buf.String() != "x\n" {
		t.Errorf("streamLog() = %v, wrote %q", err, buf.String())
	}
}

type errWriter struct{ err error }

func (w errWriter) Write([]byte) (int, error) { return 0, w.err }

func TestLimitWriter(t *testing.T) {
	t.Run("writes up to the limit", func(t *testing.T) {
		var buf bytes.Buffer
		w := &limitWriter{w: &buf, n: 10}
		steps := []struct {
			in      string
			wantN   int
			wantErr error
		}{
			{"abc", 3, nil},
			{"defgh", 5, nil},
			{"ijklmn", 2, nil},
			{"o", 0, io.EOF},
			{"", 0, io.EOF},
		}
		for _, s := range steps {
			n, err := w.Write([]byte(s.in))
			if n != s.wantN || err != s.wantErr {
				t.Errorf("Write(%q) = %d, %v; want %d, %v", s.in, n, err, s.wantN, s.wantErr)
			}
		}
		if buf.String() != "abcdefghij" {
			t.Errorf("wrote %q, want %q", buf.String(), "abcdefghij")
		}
	})
	t.Run("zero limit", func(t *testing.T) {
		var buf bytes.Buffer
		n, err := (&limitWriter{w: &buf, n: 0}).Write([]byte("x"))
		if n != 0 || err != io.EOF || buf.Len() != 0 {
			t.Errorf("Write = %d, %v, wrote %q", n, err, buf.String())
		}
	})
	t.Run("io.Copy stops at the limit", func(t *testing.T) {
		var buf bytes.Buffer
		_, err := io.Copy(&limitWriter{w: &buf, n: 7}, strings.NewReader(strings.Repeat("0123456789", 100)))
		if err == nil {
			t.Error("io.Copy past the limit returned no error")
		}
		if buf.String() != "0123456" {
			t.Errorf("wrote %q, want %q", buf.String(), "0123456")
		}
	})
	t.Run("underlying error", func(t *testing.T) {
		boom := errors.New("boom")
		w := &limitWriter{w: errWriter{boom}, n: 5}
		n, err := w.Write([]byte("abc"))
		if n != 0 || err != boom || w.n != 5 {
			t.Errorf("Write = %d, %v, remaining %d; want 0, boom, 5", n, err, w.n)
		}
	})
}

func TestExitErr(t *testing.T) {
	if err := exitErr(nil); err != nil {
		t.Errorf("exitErr(nil) = %v", err)
	}
	plain := errors.New("plain")
	if err := exitErr(plain); err != plain {
		t.Errorf("exitErr(plain) = %v, want the same error", err)
	}
	notFound := exec.Command(filepath.Join(t.TempDir(), "does-not-exist")).Run()
	if err := exitErr(notFound); err != notFound {
		t.Errorf("exitErr(start failure) = %#v, want the same error", err)
	}

	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on this host")
	}
	tests := []struct {
		script string
		want   int
	}{
		{"exit 3", 3},
		{"exit 255", 255},
		{"kill -KILL $$", 128 + 9},
		{"kill -TERM $$", 128 + 15},
	}
	for _, tt := range tests {
		t.Run(tt.script, func(t *testing.T) {
			err := exitErr(exec.Command(sh, "-c", tt.script).Run())
			var ce utilexec.CodeExitError
			if !errors.As(err, &ce) {
				t.Fatalf("exitErr() = %T %v, want a CodeExitError", err, err)
			}
			if ce.ExitStatus() != tt.want || !ce.Exited() {
				t.Errorf("exit status = %d (exited %v), want %d", ce.ExitStatus(), ce.Exited(), tt.want)
			}
			var ee *exec.ExitError
			if !errors.As(ce.Err, &ee) {
				t.Errorf("wrapped error = %T, want *exec.ExitError", ce.Err)
			}
		})
	}
	if err := exitErr(exec.Command(sh, "-c", "exit 0").Run()); err != nil {
		t.Errorf("exitErr(success) = %v", err)
	}
}
