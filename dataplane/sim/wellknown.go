package sim

// Well-known numbers of the pod contract that the walk needs.
//
// TODO(dataplane): take these from the leaf package dataplane (ports, proxy
// UID) once it exists; they are copied here so that the simulator imports no
// weft builder (translator/envoy owns them today).
const (
	// OutboundCapturePort is where weft-init's OUTPUT rules redirect the
	// application's connections.
	OutboundCapturePort = 15001
	// InboundCapturePort is where weft-init's PREROUTING rules redirect
	// connections arriving for the pod.
	InboundCapturePort = 15006
	// ProxyUID (and GID) is the user the sidecar runs as; weft-init's rules
	// exempt its connections from capture.
	ProxyUID = 1337
)

// AppUID is the user the simulated application runs as: any user but the
// proxy's.
const AppUID = 1000

// MaxHops bounds a walk: a connection accepted by more listeners than this
// is a loop.
const MaxHops = 8
