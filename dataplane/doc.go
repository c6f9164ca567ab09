// Package dataplane is the pod contract: what weft-controller, the sidecar
// bootstrap, weft-init, the injection webhook and `weft agent` must agree
// on — the proxy's ports, the names of its listeners, clusters and secrets,
// the node metadata a proxy sends and the server reads, the proxy's user,
// and the container, label, annotation, ConfigMap and environment names.
//
// It imports the standard library only, so that every side of the contract
// (including weft-init and the agent, which must stay small) imports it
// downward instead of borrowing a name from a package that links the xDS
// server or the Envoy protos.
package dataplane
