package xdsload

import (
	"fmt"
	"runtime"
	"testing"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestResponseCodecDecodes: what the simulated proxies' codec makes of a
// response is what proto.Unmarshal makes of it, for every field a
// discovery response can carry, including those it leaves to proto.
func TestResponseCodecDecodes(t *testing.T) {
	full := &discoveryv3.DeltaDiscoveryResponse{
		SystemVersionInfo: "v1",
		TypeUrl:           "type.googleapis.com/envoy.config.cluster.v3.Cluster",
		Nonce:             "7",
		Resources: []*discoveryv3.Resource{
			{Name: "a", Version: "1", Resource: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: []byte("\x0a\x01a")}},
			{Name: "b", Version: "2", Aliases: []string{"b2"}, Ttl: durationpb.New(5e9),
				CacheControl: &discoveryv3.Resource_CacheControl{DoNotCache: true},
				ResourceName: &discoveryv3.ResourceName{Name: "b"},
				Metadata:     &corev3.Metadata{FilterMetadata: nil},
				Resource:     &anypb.Any{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster"}},
			{Name: "c"}, // no version, no value
		},
		RemovedResources:     []string{"x", "y"},
		RemovedResourceNames: []*discoveryv3.ResourceName{{Name: "x"}},
		ControlPlane:         &corev3.ControlPlane{Identifier: "istiod"},
		ResourceErrors:       []*discoveryv3.ResourceError{{ResourceName: &discoveryv3.ResourceName{Name: "z"}, ErrorDetail: &status.Status{Code: 5}}},
	}
	b, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	// An Any with a field it does not know, and a Resource whose Any
	// comes in two parts (proto merges them): both left to proto.
	odd := protowire.AppendTag(nil, 2, protowire.BytesType)
	anyOdd := protowire.AppendTag(nil, 1, protowire.BytesType)
	anyOdd = protowire.AppendString(anyOdd, "t")
	anyOdd = protowire.AppendTag(anyOdd, 3, protowire.VarintType)
	anyOdd = protowire.AppendVarint(anyOdd, 1)
	res := protowire.AppendTag(nil, 2, protowire.BytesType)
	res = protowire.AppendBytes(res, anyOdd)
	res = protowire.AppendTag(res, 2, protowire.BytesType)
	res = protowire.AppendBytes(res, protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), []byte("v")))
	res = protowire.AppendTag(res, 3, protowire.BytesType)
	res = protowire.AppendString(res, "odd")
	odd = protowire.AppendBytes(odd, res)
	for name, wire := range map[string][]byte{"every field": b, "unknown Any field, Any in two parts": odd, "empty": nil} {
		t.Run(name, func(t *testing.T) {
			want := &discoveryv3.DeltaDiscoveryResponse{}
			if err := proto.Unmarshal(wire, want); err != nil {
				t.Fatal(err)
			}
			got := &discoveryv3.DeltaDiscoveryResponse{Nonce: "stale"} // decoding resets it
			if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, got); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("decoded\n%v\nproto.Unmarshal gives\n%v", got, want)
			}
			// As Proxy.Run reads it: into a pooled buffer.
			var in received
			if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &in); err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(in.r, want) {
				t.Errorf("decoded into a pooled buffer\n%v\nproto.Unmarshal gives\n%v", in.r, want)
			}
			in.release()
		})
	}

	// The values are windows on the message, not copies.
	r := &discoveryv3.DeltaDiscoveryResponse{}
	if err := decodeDelta(b, r); err != nil {
		t.Fatal(err)
	}
	v := r.Resources[0].Resource.Value
	start, end := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&b[len(b)-1]))
	if p := uintptr(unsafe.Pointer(&v[0])); p < start || p > end {
		t.Error("a resource's value was copied out of the message")
	}
	if cap(v) != len(v) {
		t.Errorf("a value's capacity reaches past it (%d > %d): an append would write over the message", cap(v), len(v))
	}
	// Names are shared between responses.
	r2 := &discoveryv3.DeltaDiscoveryResponse{}
	if err := decodeDelta(append([]byte(nil), b...), r2); err != nil {
		t.Fatal(err)
	}
	if unsafe.StringData(r.Resources[0].Name) != unsafe.StringData(r2.Resources[0].Name) {
		t.Error("the same name decoded twice is two strings")
	}
}

// TestResponseCodecRefusesWhatProtoRefuses: invalid UTF-8 in a string and
// a truncated message fail as they do with proto.Unmarshal.
func TestResponseCodecRefusesWhatProtoRefuses(t *testing.T) {
	bad := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	resName := bad(2, string(bad(3, "\xff")))
	ok, _ := proto.Marshal(&discoveryv3.DeltaDiscoveryResponse{Nonce: "1", TypeUrl: "t"})
	for name, in := range map[string][]byte{
		"type URL":      bad(4, "\xff"),
		"nonce":         bad(5, "\xfe"),
		"removed":       bad(6, "a\xff"),
		"resource name": resName,
		"truncated":     ok[:len(ok)-1],
	} {
		if err := proto.Unmarshal(in, &discoveryv3.DeltaDiscoveryResponse{}); err == nil {
			t.Fatalf("%s: proto.Unmarshal accepts it: the case is wrong", name)
		}
		if err := decodeDelta(in, &discoveryv3.DeltaDiscoveryResponse{}); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
}

// TestResponseCodecDecodesInPieces: a response decodes from gRPC's
// buffers as they arrive, cut anywhere (inside a tag, a length, a value),
// to what proto.Unmarshal gives; a value within one buffer is a window on
// it, one across buffers a copy; the buffers are kept until release, not
// given back when Unmarshal returns (as gRPC frees its reference).
func TestResponseCodecDecodesInPieces(t *testing.T) {
	r := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Nonce: "1",
		SystemVersionInfo: "v", RemovedResources: []string{"gone"}, ControlPlane: &corev3.ControlPlane{Identifier: "cp"}}
	for i := range 40 {
		v := make([]byte, 10+i*37)
		for j := range v {
			v[j] = byte(i + j)
		}
		r.Resources = append(r.Resources, &discoveryv3.Resource{Name: fmt.Sprintf("c%d", i), Version: "1",
			Resource: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: v}})
	}
	r.Resources[3].Ttl = durationpb.New(time.Second)
	wire, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	want := &discoveryv3.DeltaDiscoveryResponse{}
	if err := proto.Unmarshal(wire, want); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{1, 2, 3, 7, 64, 1000, 16 << 10} {
		pool := &countingPool{}
		var data mem.BufferSlice
		pooled := 0 // gRPC pools only buffers above a threshold
		for b := wire; len(b) > 0; {
			n := min(len(b), size)
			piece := pool.Get(n)
			copy(*piece, b[:n])
			data = append(data, mem.NewBuffer(piece, pool))
			if !mem.IsBelowBufferPoolingThreshold(n) {
				pooled++
			}
			b = b[n:]
		}
		var in received
		if err := codec.Unmarshal(data, &in); err != nil {
			t.Fatalf("pieces of %d: %v", size, err)
		}
		data.Free() // gRPC's reference
		if pool.put != 0 {
			t.Errorf("pieces of %d: %d buffers given back while the response is held", size, pool.put)
		}
		if !proto.Equal(in.r, want) {
			t.Errorf("pieces of %d: decoded\n%v\nproto.Unmarshal gives\n%v", size, in.r, want)
		}
		if size == 16<<10 {
			v, piece := in.r.Resources[0].Resource.Value, *pool.got[0]
			start, end := uintptr(unsafe.Pointer(&piece[0])), uintptr(unsafe.Pointer(&piece[len(piece)-1]))
			if p := uintptr(unsafe.Pointer(&v[0])); p < start || p > end {
				t.Error("a value within one buffer was copied")
			}
		}
		in.release()
		if pool.put != pooled {
			t.Errorf("pieces of %d: %d of %d buffers given back after release", size, pool.put, pooled)
		}
	}
}

// countingPool is a mem.BufferPool that counts what is given back.
type countingPool struct {
	got []*[]byte
	put int
}

func (p *countingPool) Get(n int) *[]byte {
	b := make([]byte, n)
	p.got = append(p.got, &b)
	return &b
}

func (p *countingPool) Put(*[]byte) { p.put++ }

// TestKeptSlabsSurviveCollections: the messages a response is decoded
// into are reused for the next response after garbage collections (the
// point of responseSlabs), and nothing of the first shows through: the
// first carries fields only proto.Unmarshal decodes (aliases, a TTL) and
// more resources; the second decodes as proto.Unmarshal decodes it.
func TestKeptSlabsSurviveCollections(t *testing.T) {
	response := func(n int, extras bool) []byte {
		r := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Nonce: "1"}
		for i := range n {
			res := &discoveryv3.Resource{Name: fmt.Sprintf("c%d", i), Version: "1",
				Resource: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Value: []byte{byte(i)}}}
			if extras {
				res.Aliases, res.Ttl = []string{"alias"}, durationpb.New(time.Second)
			}
			r.Resources = append(r.Resources, res)
		}
		b, err := proto.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big, small := response(300, true), response(100, false)
	var in received
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(big)}, &in); err != nil {
		t.Fatal(err)
	}
	if in.r.Resources[0].Ttl == nil {
		t.Fatal("the first response's TTL was not decoded: the case is wrong")
	}
	first := in.r.Resources[0]
	in.release()
	runtime.GC()
	runtime.GC()
	if err := codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(small)}, &in); err != nil {
		t.Fatal(err)
	}
	defer in.release()
	if in.r.Resources[0] != first {
		t.Errorf("the second response's messages are new: kept slabs are not reused after collections")
	}
	want := &discoveryv3.DeltaDiscoveryResponse{}
	if err := proto.Unmarshal(small, want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in.r, want) {
		for i := range min(len(in.r.Resources), len(want.Resources)) {
			if !proto.Equal(in.r.Resources[i], want.Resources[i]) {
				t.Fatalf("decoded into a reused slab, resource %d is\n%v\nproto.Unmarshal gives\n%v", i, in.r.Resources[i], want.Resources[i])
			}
		}
		t.Errorf("decoded into a reused slab: %d resources, proto.Unmarshal gives %d", len(in.r.Resources), len(want.Resources))
	}
}
