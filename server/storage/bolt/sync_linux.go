package bolt

import (
	"errors"
	"os"
	"syscall"
)

// fdatasync flushes a file's data and the metadata needed to read it back,
// as bbolt does on Linux.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }

// fullDisk reports whether err is the file system having no room: no
// space, or the quota used up.
func fullDisk(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}
