package stat

import (
	"strconv"
	"strings"
)

// Direction says which side of a call a cluster's statistics count.
type Direction string

const (
	// Outbound clusters count the calls a workload made to a Service.
	Outbound Direction = "outbound"
	// Inbound clusters count the calls a sidecar delivered to its own
	// application, on one of the pod's ports.
	Inbound Direction = "inbound"
)

// Cluster is what weft's cluster name says (translator/envoy: clusters.go,
// family.go, tcpsplit.go; ir.ClusterName).
type Cluster struct {
	Direction Direction
	// Port is the Service port (outbound) or the pod's port (inbound).
	Port int
	// Namespace and Service name the destination Service (outbound only).
	Namespace, Service string
	// IPv6 marks a dual-stack Service's IPv6 cluster
	// (outbound|PORT|ipv6|HOST, docs/design/064).
	IPv6 bool
	// TCPSplit marks a TCP TrafficSplit's cluster, which holds every
	// backend's endpoints (outbound|PORT|tcp-split|HOST, docs/design/058).
	TCPSplit bool
	// Endpoint is the address of a headless Service's endpoint
	// (outbound|PORT|ADDRESS|HOST).
	Endpoint string
}

// ParseCluster reads a weft cluster name:
//
//	outbound|PORT||NAME.NS.svc.DOMAIN
//	outbound|PORT|ipv6|HOST
//	outbound|PORT|tcp-split|HOST, outbound|PORT|tcp-split|ipv6|HOST
//	outbound|PORT|ADDRESS|HOST       (a headless Service's endpoint)
//	inbound|PORT||
//
// Other clusters (PassthroughCluster, admin, app-probe|…) are not a
// Service's: ok is false.
func ParseCluster(name string) (c Cluster, ok bool) {
	parts := strings.Split(name, "|")
	if len(parts) < 4 {
		return Cluster{}, false
	}
	port, err := strconv.Atoi(parts[1])
	if err != nil || port < 1 || port > 65535 {
		return Cluster{}, false
	}
	c.Port = port
	switch parts[0] {
	case string(Inbound):
		if len(parts) != 4 || parts[2] != "" || parts[3] != "" {
			return Cluster{}, false
		}
		c.Direction = Inbound
		return c, true
	case string(Outbound):
	default:
		return Cluster{}, false
	}
	c.Direction = Outbound
	var host string
	switch {
	case len(parts) == 5 && parts[2] == "tcp-split" && parts[3] == "ipv6":
		c.TCPSplit, c.IPv6, host = true, true, parts[4]
	case len(parts) != 4:
		return Cluster{}, false
	case parts[2] == "":
		host = parts[3]
	case parts[2] == "ipv6":
		c.IPv6, host = true, parts[3]
	case parts[2] == "tcp-split":
		c.TCPSplit, host = true, parts[3]
	default:
		c.Endpoint, host = parts[2], parts[3]
	}
	// NAME.NS.svc.DOMAIN (ir.ServiceKey.Hostname); the domain is not
	// checked, so a cluster with another DNS domain reads the same.
	labels := strings.SplitN(host, ".", 4)
	if len(labels) < 4 || labels[0] == "" || labels[1] == "" || labels[2] != "svc" {
		return Cluster{}, false
	}
	c.Service, c.Namespace = labels[0], labels[1]
	return c, true
}
