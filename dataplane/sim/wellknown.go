package sim

import "github.com/weftmesh/weft/dataplane"

// Well-known numbers of the pod contract that the walk needs, from package
// dataplane (the contract itself, not a builder).
const (
	// OutboundCapturePort is where weft-init's OUTPUT rules redirect the
	// application's connections.
	OutboundCapturePort = dataplane.OutboundPort
	// InboundCapturePort is where weft-init's PREROUTING rules redirect
	// connections arriving for the pod.
	InboundCapturePort = dataplane.InboundPort
	// ProxyUID (and GID) is the user the sidecar runs as; weft-init's rules
	// exempt its connections from capture.
	ProxyUID = dataplane.ProxyUID
)

// AppUID is the user the simulated application runs as: any user but the
// proxy's.
const AppUID = 1000

// MaxHops bounds a walk: a connection accepted by more listeners than this
// is a loop.
const MaxHops = 8
