// Package buildinfo says which build of the exchange is running, for
// --version on exchange-server and exchangectl, from what the Go toolchain
// records in the binary: the module's version (a tag, when built with go
// install module@version) and the commit it was built from.
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// String is "<program> <version> (commit <revision>[, modified], <go version>)".
func String(program string) string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return program + " (no build information)"
	}
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev == "" {
		rev = "unknown"
	}
	return fmt.Sprintf("%s %s (commit %s%s, %s)", program, version, rev, modified, info.GoVersion)
}
