//go:build !linux

package bolt

import "os"

// fdatasync is a full sync where Fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }
