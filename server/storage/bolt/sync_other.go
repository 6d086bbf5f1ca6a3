//go:build !linux

package bolt

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync is a full sync where Fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }

// fullDisk reports whether err is the file system having no room.
func fullDisk(err error) bool { return errors.Is(err, syscall.ENOSPC) }
