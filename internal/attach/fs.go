package attach

import (
	"errors"
	"io/fs"
	"os"
)

// removeSocket removes a socket file; other kinds of file are left alone.
func removeSocket(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st.Mode().Type() != fs.ModeSocket {
		return errors.New(path + " exists and is not a socket")
	}
	return os.Remove(path)
}

func chmod(path string, mode fs.FileMode) error { return os.Chmod(path, mode) }
