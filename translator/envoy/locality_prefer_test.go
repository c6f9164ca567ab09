package envoy_test

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/translator/envoy"
)

func cla(locs ...[2]string) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: "outbound|80||web.shop.svc.cluster.local"}
	for i, l := range locs {
		out.Endpoints = append(out.Endpoints, &endpointv3.LocalityLbEndpoints{
			Locality:            &corev3.Locality{Region: l[0], Zone: l[1]},
			LoadBalancingWeight: wrapperspb.UInt32(uint32(i + 1)),
			LbEndpoints:         []*endpointv3.LbEndpoint{{}},
		})
	}
	return out
}

func priorities(c *endpointv3.ClusterLoadAssignment) map[string]uint32 {
	out := map[string]uint32{}
	for _, l := range c.GetEndpoints() {
		out[l.GetLocality().GetRegion()+"/"+l.GetLocality().GetZone()] = l.GetPriority()
	}
	return out
}

// TestPreferLocality: the client's zone is priority 0, its region 1, the
// rest 2; tiers without a locality are skipped so priorities are
// contiguous (gRPC-Go NACKs a gap); weights are kept; the shared input is
// untouched.
func TestPreferLocality(t *testing.T) {
	in := cla([2]string{"eu", "eu-a"}, [2]string{"eu", "eu-b"}, [2]string{"us", "us-a"})
	for _, tc := range []struct {
		name, region, zone string
		in                 *endpointv3.ClusterLoadAssignment
		want               map[string]uint32
	}{
		{"zone, region, rest", "eu", "eu-a", in, map[string]uint32{"eu/eu-a": 0, "eu/eu-b": 1, "us/us-a": 2}},
		{"no endpoint in the client's zone: its region first", "eu", "eu-c", in, map[string]uint32{"eu/eu-a": 0, "eu/eu-b": 0, "us/us-a": 1}},
		{"no region known (EndpointSlices carry zones only): zone, then the rest", "", "eu-b", cla([2]string{"", "eu-a"}, [2]string{"", "eu-b"}), map[string]uint32{"/eu-a": 1, "/eu-b": 0}},
		{"nothing in the client's region: one tier, unchanged", "ap", "ap-a", in, map[string]uint32{"eu/eu-a": 0, "eu/eu-b": 0, "us/us-a": 0}},
		{"zone unknown: unchanged", "eu", "", in, map[string]uint32{"eu/eu-a": 0, "eu/eu-b": 0, "us/us-a": 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := envoy.PreferLocality(tc.in, tc.region, tc.zone)
			p := priorities(got)
			for k, v := range tc.want {
				if p[k] != v {
					t.Errorf("priorities %v, want %v", p, tc.want)
					break
				}
			}
			for i, l := range got.GetEndpoints() {
				if l.GetLoadBalancingWeight().GetValue() != tc.in.GetEndpoints()[i].GetLoadBalancingWeight().GetValue() {
					t.Errorf("locality %d weight %d, want %d", i, l.GetLoadBalancingWeight().GetValue(), tc.in.GetEndpoints()[i].GetLoadBalancingWeight().GetValue())
				}
			}
			if err := got.ValidateAll(); err != nil {
				t.Error(err)
			}
		})
	}
	for _, l := range in.GetEndpoints() {
		if l.GetPriority() != 0 {
			t.Fatalf("the shared input was modified: %v", priorities(in))
		}
	}
}
