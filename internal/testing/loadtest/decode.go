package loadtest

import (
	"bytes"
	"fmt"
	"net/netip"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// An endpoint change is written as a new address for a Service's first
// endpoint, taken from markerPrefix: the address encodes the change's
// sequence number, so a proxy's endpoints say which change they reflect.
var markerPrefix = netip.MustParsePrefix("10.250.0.0/16")

// markerText starts every marker address as text ("10.250.").
var markerText = []byte("10.250.")

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
	// Addresses are strings in the encoding: most assignments carry no
	// marker and need no decoding.
	if !bytes.Contains(res.GetResource().GetValue(), markerText) {
		return -1, nil
	}
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
//
// It walks the wire format for the few fields it needs (virtual_hosts →
// routes → route → weighted_clusters → clusters → name, weight) rather
// than decoding the whole message: istiod's route configuration for port
// 80 holds every Service's virtual host (about 1 MB at 2,000 Services) and
// reaches every proxy on every change, and the simulated proxies share
// the measured control plane's cores. TestDecode checks it against
// proto.Unmarshal.
func clusterWeight(res *discoveryv3.Resource, cluster string) (int, error) {
	found := -1
	err := eachField(res.GetResource().GetValue(), 2, func(vh []byte) (bool, error) { // RouteConfiguration.virtual_hosts
		return found >= 0, eachField(vh, 3, func(r []byte) (bool, error) { // VirtualHost.routes
			return found >= 0, eachField(r, 2, func(ra []byte) (bool, error) { // Route.route
				return found >= 0, eachField(ra, 3, func(wc []byte) (bool, error) { // RouteAction.weighted_clusters
					return found >= 0, eachField(wc, 1, func(cw []byte) (bool, error) { // WeightedCluster.clusters
						name, weight, err := clusterWeightFields(cw)
						if err == nil && name == cluster {
							found = weight
						}
						return found >= 0, err
					})
				})
			})
		})
	})
	if err != nil {
		return -1, fmt.Errorf("route %s: %w", res.Name, err)
	}
	return found, nil
}

// clusterWeightFields reads a ClusterWeight's name (1) and weight (2, a
// UInt32Value whose value is field 1; absent is 0).
func clusterWeightFields(b []byte) (name string, weight int, err error) {
	err = eachField(b, 1, func(v []byte) (bool, error) { name = string(v); return true, nil })
	if err != nil {
		return "", 0, err
	}
	err = eachField(b, 2, func(w []byte) (bool, error) {
		for len(w) > 0 {
			num, typ, n := protowire.ConsumeTag(w)
			if n < 0 {
				return true, protowire.ParseError(n)
			}
			w = w[n:]
			if num == 1 && typ == protowire.VarintType {
				v, m := protowire.ConsumeVarint(w)
				if m < 0 {
					return true, protowire.ParseError(m)
				}
				weight = int(v)
				return true, nil
			}
			m := protowire.ConsumeFieldValue(num, typ, w)
			if m < 0 {
				return true, protowire.ParseError(m)
			}
			w = w[m:]
		}
		return true, nil
	})
	return name, weight, err
}

// eachField calls fn with the bytes of every length-delimited field num
// of the encoded message b, in order, until fn says it is done.
func eachField(b []byte, num protowire.Number, fn func([]byte) (done bool, err error)) error {
	for len(b) > 0 {
		n, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return protowire.ParseError(k)
		}
		b = b[k:]
		if n == num && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return protowire.ParseError(m)
			}
			b = b[m:]
			if done, err := fn(v); done || err != nil {
				return err
			}
			continue
		}
		m := protowire.ConsumeFieldValue(n, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}

// hasVirtualHost reports whether an encoded RouteConfiguration has a
// virtual host whose domains (VirtualHost field 2) include host; it walks
// the wire format as clusterWeight does.
func hasVirtualHost(res *discoveryv3.Resource, host string) (bool, error) {
	found := false
	err := eachField(res.GetResource().GetValue(), 2, func(vh []byte) (bool, error) {
		return found, eachField(vh, 2, func(d []byte) (bool, error) {
			found = string(d) == host
			return found, nil
		})
	})
	if err != nil {
		return false, fmt.Errorf("route %s: %w", res.Name, err)
	}
	return found, nil
}
