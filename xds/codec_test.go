package xds

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestResponseCodecBytes: the codec's discovery responses are byte for
// byte what proto.Marshal writes, whatever fields are set, and the
// resources' encodings are handed over, not copied.
func TestResponseCodecBytes(t *testing.T) {
	big := bytes.Repeat([]byte{0x0a, 0x03, 'a', 'b', 'c'}, 1000) // above inlineBytes
	small := []byte{0x0a, 0x01, 'x'}
	anyOf := func(v []byte) *anypb.Any { return &anypb.Any{TypeUrl: resourcev3.ClusterType, Value: v} }
	unknown := anyOf(big)
	unknown.ProtoReflect().SetUnknown(protoreflect.RawFields{0x78, 0x01}) // field 15, varint 1
	cases := map[string]proto.Message{
		"delta empty":   &discoveryv3.DeltaDiscoveryResponse{},
		"delta removal": &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resourcev3.ClusterType, Nonce: "7", RemovedResources: []string{"a", "b"}},
		"delta": &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "v1", TypeUrl: resourcev3.ClusterType, Nonce: "12",
			Resources: []*discoveryv3.Resource{
				{Name: "big", Version: "0123456789abcdef", Resource: anyOf(big)},
				{Name: "small", Version: "1", Resource: anyOf(small)},
				{Name: "empty value", Version: "2", Resource: anyOf(nil)},
				{Name: "no resource", Version: "3"},
				{Name: "aliased", Version: "4", Aliases: []string{"x"}, Ttl: durationpb.New(5), Resource: anyOf(big)},
				{Name: "unknown", Resource: unknown},
				{},
			},
			RemovedResources: []string{"gone"}, ControlPlane: &corev3.ControlPlane{Identifier: "weft"},
			RemovedResourceNames: []*discoveryv3.ResourceName{{Name: "gone"}}},
		"sotw empty": &discoveryv3.DiscoveryResponse{},
		"sotw": &discoveryv3.DiscoveryResponse{VersionInfo: "v9", TypeUrl: resourcev3.EndpointType, Nonce: "3", Canary: true,
			Resources:    []*anypb.Any{anyOf(big), anyOf(small), anyOf(nil), {}, unknown},
			ControlPlane: &corev3.ControlPlane{Identifier: "weft"}},
		"not a response": &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.ClusterType, ResourceNamesSubscribe: []string{"a"}},
	}
	c := newResponseCodec()
	for name, m := range cases {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := out.Materialize(); !bytes.Equal(got, want) {
			t.Errorf("%s: the codec wrote\n%x\nproto.Marshal\n%x", name, got, want)
		}
		back := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(out, back); err != nil || !proto.Equal(back, m) {
			t.Errorf("%s: read back %v (%v), want %v", name, back, err, m)
		}
	}
	// The big encoding is one of the buffers, the very slice the
	// resource holds.
	out, _ := c.Marshal(cases["delta"])
	shared := false
	for _, b := range out {
		if d := b.ReadOnlyData(); len(d) == len(big) && &d[0] == &big[0] {
			shared = true
		}
	}
	if !shared {
		t.Error("the resource's encoding was copied, not shared")
	}
}

// TestResponseCodecDeltaOut: what sendDelta sends (deltaOut) is the
// response it stands for, as long as proto.Marshal writes it and read
// back equal (each Any's type URL comes after its value: the order differs,
// docs/design/194), each encoding's wire form (a small one too) handed
// over, not copied, and wire forms side by side in a slab as one buffer
// (docs/design/200); one with an encoding without a wire form, or
// resources of its own, is still written right.
func TestResponseCodecDeltaOut(t *testing.T) {
	big := bytes.Repeat([]byte{0x0a, 0x03, 'a', 'b', 'c'}, 1000)
	encs := []*encoded{
		newEncoded(resourcev3.ClusterType, "big", "0123456789abcdef", big),
		newEncoded(resourcev3.ClusterType, "small", "1", []byte{0x0a, 0x01, 'x'}),
		newEncoded(resourcev3.ClusterType, "empty value", "2", nil),
		newEncoded(resourcev3.ClusterType, "", "", nil),
		newEncoded(resourcev3.ClusterType, strings.Repeat("n", 300), strings.Repeat("v", 200), big[:130]), // lengths over one varint byte
	}
	if !bytes.Equal(encs[0].value(), big) || &encs[0].value()[0] == &big[0] {
		t.Fatal("an encoding's value is not its own copy of the content")
	}
	// Carved from one array, in order: a, b and c side by side, then
	// one too large for a slab (its own array), then d after c.
	sl := slab{free: make([]byte, 0, 4096)}
	carved := []*encoded{
		newEncodedIn(&sl, resourcev3.ClusterType, "a", "1", big[:100]),
		newEncodedIn(&sl, resourcev3.ClusterType, "b", "2", big[:200]),
		newEncodedIn(&sl, resourcev3.ClusterType, "c", "3", nil),
		newEncodedIn(&sl, resourcev3.ClusterType, "large", "4", big),
		newEncodedIn(&sl, resourcev3.ClusterType, "d", "5", big[:7]),
	}
	out := func(encs []*encoded, own ...*discoveryv3.Resource) *deltaOut {
		return &deltaOut{resp: &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: "v1", TypeUrl: resourcev3.ClusterType, Resources: own,
			Nonce: "12", RemovedResources: []string{"gone"}, ControlPlane: &corev3.ControlPlane{Identifier: "weft"}}, encs: encs}
	}
	hand := &encoded{} // no wire form: made whole from its Any
	hand.anyMsg.Store(&anypb.Any{TypeUrl: resourcev3.ClusterType, Value: big})
	c := newResponseCodec()
	for name, m := range map[string]*deltaOut{
		"encodings":                    out(encs),
		"carved in order":              out(carved),
		"carved out of order":          out([]*encoded{carved[1], carved[0], carved[2], carved[4], carved[3], carved[1]}),
		"none":                         out(nil),
		"an encoding without its wire": out(append(slices.Clone(encs), hand)),
		"resources of its own":         out(encs[:2], hand.resource(resourcev3.ClusterType)),
	} {
		r := m.response()
		if len(r.Resources) != len(m.resp.Resources)+len(m.encs) {
			t.Fatalf("%s: response has %d resources", name, len(r.Resources))
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b := got.Materialize()
		back := &discoveryv3.DeltaDiscoveryResponse{}
		if err := proto.Unmarshal(b, back); err != nil || len(b) != len(want) || !proto.Equal(back, r) {
			t.Errorf("%s: the codec wrote\n%x (%v)\nproto.Marshal\n%x", name, b, err, want)
		}
		if name == "none" && !bytes.Equal(b, want) {
			t.Errorf("%s: the codec wrote\n%x\nproto.Marshal\n%x", name, b, want)
		}
		// gRPC's own codec (a server without this one) writes what it
		// stands for.
		if plain, err := encoding.GetCodecV2(protoenc.Name).Marshal(m); err != nil || !bytes.Equal(plain.Materialize(), want) {
			t.Errorf("%s: gRPC's proto codec wrote %x (%v), want %x", name, plain.Materialize(), err, want)
		}
		shared := func(x []byte) bool {
			return slices.ContainsFunc(got, func(b mem.Buffer) bool { d := b.ReadOnlyData(); return &d[0] == &x[0] })
		}
		if name == "encodings" && (!shared(encs[1].wire) || !shared(encs[0].wire)) {
			t.Error("the wire form was copied, not shared")
		}
		// The envelope's two pieces (before and after the resources) and
		// the resources': a, b and c as one, large, d; out of order,
		// b, a, c and d as one, large, b.
		if want := map[string]int{"carved in order": 5, "carved out of order": 7}[name]; want > 0 && (len(got) != want || !shared(carved[0].wire) || !shared(carved[3].wire)) {
			t.Errorf("%s: %d buffers, want %d, the first and the large one shared", name, len(got), want)
		}
	}
}

// TestResponseCodecKnowsEveryField: the codec writes the fields of the
// discovery messages by number; a field added to them (a go-control-plane
// upgrade) must be added to the codec (codec.go), or it would be dropped.
func TestResponseCodecKnowsEveryField(t *testing.T) {
	for _, c := range []struct {
		m     proto.Message
		known []protoreflect.FieldNumber
	}{
		// marshalDelta: 1 itself, 2 through appendResource, the rest
		// through its copy.
		{&discoveryv3.DeltaDiscoveryResponse{}, []protoreflect.FieldNumber{1, 2, 4, 5, 6, 7, 8, 9}},
		// appendResource: 1, 2, 3 itself; the others make it copy the
		// resource whole.
		{&discoveryv3.Resource{}, []protoreflect.FieldNumber{1, 2, 3, 4, 6, 7, 8, 9}},
		{&discoveryv3.DiscoveryResponse{}, []protoreflect.FieldNumber{1, 2, 3, 4, 5, 6, 7}},
		{&anypb.Any{}, []protoreflect.FieldNumber{1, 2}},
	} {
		fields := c.m.ProtoReflect().Descriptor().Fields()
		var have []protoreflect.FieldNumber
		var names []string
		for i := range fields.Len() {
			have = append(have, fields.Get(i).Number())
			names = append(names, string(fields.Get(i).Name()))
		}
		slices.Sort(have)
		if !slices.Equal(have, c.known) {
			t.Errorf("%s has fields %v (%s); responseCodec knows %v: update codec.go", c.m.ProtoReflect().Descriptor().FullName(), have, strings.Join(names, ", "), c.known)
		}
	}
}
