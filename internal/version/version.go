// Package version reports what build of weft is running.
package version

import (
	"runtime"
	"runtime/debug"
)

// Version is set at link time by the Makefile
// (-X github.com/weftmesh/weft/internal/version.Version=...). Builds without
// it, such as `go run`, report "dev".
var Version = "dev"

// Revision is the VCS commit, set at link time like Version; when empty,
// the revision Go recorded in the build info is used, if any.
var Revision = ""

// Info describes a build of weft.
type Info struct {
	Version   string `json:"version"`
	Revision  string `json:"revision"`
	GoVersion string `json:"goVersion"`
}

// Get returns the running build's version, VCS revision (when Go recorded
// one) and Go version.
func Get() Info {
	info := Info{Version: Version, Revision: Revision, GoVersion: runtime.Version()}
	if info.Revision == "" {
		info.Revision = "unknown"
	}
	if bi, ok := debug.ReadBuildInfo(); ok && Revision == "" {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && s.Value != "" {
				info.Revision = s.Value
			}
		}
	}
	return info
}

// String formats the info on one line, as `weft version` prints it.
func (i Info) String() string {
	return i.Version + " (revision " + i.Revision + ", " + i.GoVersion + ")"
}
