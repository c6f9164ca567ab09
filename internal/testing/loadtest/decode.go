package loadtest

import (
	"fmt"
	"net/netip"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
)

// An endpoint change is written as a new address for a Service's first
// endpoint, taken from markerPrefix: the address encodes the change's
// sequence number, so a proxy's endpoints say which change they reflect.
var markerPrefix = netip.MustParsePrefix("10.250.0.0/16")

// maxMarker is the number of distinct markers.
const maxMarker = 1 << 16

// markerAddr is the address that marks change seq (0 ≤ seq < maxMarker).
func markerAddr(seq int) string {
	b := markerPrefix.Addr().As4()
	b[2], b[3] = byte(seq>>8), byte(seq)
	return netip.AddrFrom4(b).String()
}

// markerSeq reads a marker address back; ok is false for other addresses.
func markerSeq(addr string) (seq int, ok bool) {
	a, err := netip.ParseAddr(addr)
	if err != nil || !markerPrefix.Contains(a) {
		return 0, false
	}
	b := a.As4()
	return int(b[2])<<8 | int(b[3]), true
}

// loadAssignmentMarker is the highest marker among the endpoints of an
// encoded ClusterLoadAssignment, or -1 when none has one.
func loadAssignmentMarker(res *discoveryv3.Resource) (int, error) {
	var cla endpointv3.ClusterLoadAssignment
	if err := proto.Unmarshal(res.GetResource().GetValue(), &cla); err != nil {
		return -1, fmt.Errorf("endpoints %s: %w", res.Name, err)
	}
	best := -1
	for _, l := range cla.Endpoints {
		for _, e := range l.LbEndpoints {
			if seq, ok := markerSeq(e.GetEndpoint().GetAddress().GetSocketAddress().GetAddress()); ok && seq > best {
				best = seq
			}
		}
	}
	return best, nil
}

// clusterWeight is the weight an encoded RouteConfiguration gives cluster
// in a weighted split, or -1 when no route splits to it.
func clusterWeight(res *discoveryv3.Resource, cluster string) (int, error) {
	var rc routev3.RouteConfiguration
	if err := proto.Unmarshal(res.GetResource().GetValue(), &rc); err != nil {
		return -1, fmt.Errorf("route %s: %w", res.Name, err)
	}
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			for _, c := range r.GetRoute().GetWeightedClusters().GetClusters() {
				if c.Name == cluster {
					return int(c.GetWeight().GetValue()), nil
				}
			}
		}
	}
	return -1, nil
}
