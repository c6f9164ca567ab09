package xds

import (
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// responseCodec is gRPC's proto codec, except for discovery responses,
// which it writes without copying the resources they carry.
//
// A response's resources are already encoded (encoder), once, and shared
// by every group and stream that sends them. gRPC's proto codec marshals
// a response into one buffer of its whole size, from gRPC's pool: a cold
// start copies each proxy's whole configuration (4.3 MiB at 2,000
// Services) into buffers that stay queued until the proxy has read them,
// then sit in the pool until two garbage collections pass — the heap a
// reading after one collection finds, 2-4 MiB per proxy (docs/design/180).
// This codec writes the envelope (names, versions, type URLs, nonce) into
// one small buffer and hands gRPC the shared encodings as they are: the
// message is a sequence of slices, the same bytes proto.Marshal would
// produce (TestResponseCodecBytes), and the transport copies them frame by
// frame into its own 16 KiB frame buffers as it writes.
type responseCodec struct {
	proto encoding.CodecV2
}

func newResponseCodec() responseCodec {
	return responseCodec{proto: encoding.GetCodecV2(protoenc.Name)}
}

// Name is the proto codec's: the content type is unchanged.
func (c responseCodec) Name() string { return protoenc.Name }

func (c responseCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

func (c responseCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *deltaOut:
		if w, ok := marshalDeltaOut(m); ok {
			return w.done(), nil
		}
		r := m.response()
		if w, ok := marshalDelta(r); ok {
			return w.done(), nil
		}
		return c.proto.Marshal(r)
	case *discoveryv3.DeltaDiscoveryResponse:
		if w, ok := marshalDelta(m); ok {
			return w.done(), nil
		}
	case *discoveryv3.DiscoveryResponse:
		if w, ok := marshalSotW(m); ok {
			return w.done(), nil
		}
	}
	return c.proto.Marshal(v)
}

// inlineBytes: an encoding shorter than this is copied into the envelope
// buffer rather than handed over as a slice of its own (a slice costs
// the transport a buffer header and a read).
const inlineBytes = 512

// sliceWriter builds a message as a sequence of buffers: its own bytes
// (meta) between shared ones. Slices of meta handed out are never written
// again (meta only grows; a reallocation leaves them on the old array).
type sliceWriter struct {
	meta []byte
	mark int // meta[:mark] is already in out
	out  mem.BufferSlice
}

// share appends b without copying it.
func (w *sliceWriter) share(b []byte) {
	if len(b) < inlineBytes {
		w.meta = append(w.meta, b...)
		return
	}
	w.flush()
	w.out = append(w.out, mem.SliceBuffer(b))
}

func (w *sliceWriter) flush() {
	if len(w.meta) > w.mark {
		w.out = append(w.out, mem.SliceBuffer(w.meta[w.mark:len(w.meta):len(w.meta)]))
		w.mark = len(w.meta)
	}
}

func (w *sliceWriter) done() mem.BufferSlice {
	w.flush()
	return w.out
}

var plainMarshal = proto.MarshalOptions{Deterministic: true}

// appendMsg appends m's encoding (all of it copied) to meta.
func (w *sliceWriter) appendMsg(m proto.Message) bool {
	b, err := plainMarshal.MarshalAppend(w.meta, m)
	if err != nil {
		return false
	}
	w.meta = b
	return true
}

// appendAny appends an Any as field num of the enclosing message, its
// value shared. ok is false if the Any carries what the codec does not
// write (unknown fields).
func (w *sliceWriter) appendAny(num protowire.Number, a *anypb.Any) bool {
	if len(a.ProtoReflect().GetUnknown()) > 0 {
		return false
	}
	w.meta = protowire.AppendTag(w.meta, num, protowire.BytesType)
	w.meta = protowire.AppendVarint(w.meta, uint64(anySize(a)))
	w.meta = appendString(w.meta, 1, a.TypeUrl)
	if len(a.Value) > 0 {
		w.meta = protowire.AppendTag(w.meta, 2, protowire.BytesType)
		w.meta = protowire.AppendVarint(w.meta, uint64(len(a.Value)))
		w.share(a.Value)
	}
	return true
}

func anySize(a *anypb.Any) int {
	// Not stringSize(2, string(a.Value)): that copies the value (up to a
	// MB for the outbound listener) on every response (docs/design/184).
	n := stringSize(1, a.TypeUrl)
	if len(a.Value) > 0 {
		n += protowire.SizeTag(2) + protowire.SizeBytes(len(a.Value))
	}
	return n
}

// appendString appends a proto3 string (or bytes) field, left out when
// empty as proto does.
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func stringSize(num protowire.Number, s string) int {
	if s == "" {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
}

// marshalDelta writes a Delta response: system_version_info (1), the
// resources (2), then the other fields (4 and up), in field order as
// proto.Marshal does. ok is false for a message with unknown fields.
func marshalDelta(m *discoveryv3.DeltaDiscoveryResponse) (*sliceWriter, bool) {
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return nil, false
	}
	meta := len(m.SystemVersionInfo) + len(m.TypeUrl) + len(m.Nonce) + 16
	for _, r := range m.Resources {
		meta += len(r.GetName()) + len(r.GetVersion()) + len(r.GetResource().GetTypeUrl()) + 32
		if v := r.GetResource().GetValue(); len(v) < inlineBytes {
			meta += len(v)
		}
	}
	for _, n := range m.RemovedResources {
		meta += len(n) + 4
	}
	w := &sliceWriter{meta: make([]byte, 0, meta)}
	w.meta = appendString(w.meta, 1, m.SystemVersionInfo)
	for _, r := range m.Resources {
		if !w.appendResource(r) {
			return nil, false
		}
	}
	rest := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: m.TypeUrl, RemovedResources: m.RemovedResources,
		RemovedResourceNames: m.RemovedResourceNames, Nonce: m.Nonce, ControlPlane: m.ControlPlane, ResourceErrors: m.ResourceErrors}
	if !w.appendMsg(rest) {
		return nil, false
	}
	return w, true
}

// deltaOut is what sendDelta sends: a Delta response (resp, without its
// Resources) and the encodings of its resources, in order. The codec
// hands over each resource's wire form as it is, shared by every response
// that carries it, where marshalDelta would write each envelope (name,
// version, type URL: ~130 bytes) again and sendDelta make a Resource
// message per resource per proxy (docs/design/188). response() is the
// message it stands for; ProtoReflect lets any other codec write it.
type deltaOut struct {
	resp *discoveryv3.DeltaDiscoveryResponse
	encs []*encoded
}

// ProtoReflect makes d the proto.Message it stands for, so that a server
// without this codec (grpc.NewServer in a test, a binary log) writes the
// same response, made whole first.
func (d *deltaOut) ProtoReflect() protoreflect.Message { return d.response().ProtoReflect() }

// response returns the Delta response d stands for, its resources made
// from the encodings.
func (d *deltaOut) response() *discoveryv3.DeltaDiscoveryResponse {
	r := d.resp
	out := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: r.SystemVersionInfo, Resources: slices.Clone(r.Resources), TypeUrl: r.TypeUrl,
		RemovedResources: r.RemovedResources, RemovedResourceNames: r.RemovedResourceNames, Nonce: r.Nonce,
		ControlPlane: r.ControlPlane, ResourceErrors: r.ResourceErrors}
	for _, e := range d.encs {
		out.Resources = append(out.Resources, e.resource(r.TypeUrl))
	}
	return out
}

// marshalDeltaOut writes the response d stands for as marshalDelta would.
// ok is false when an encoding has no wire form, or resp has resources
// or unknown fields of its own.
func marshalDeltaOut(d *deltaOut) (*sliceWriter, bool) {
	r := d.resp
	if len(r.ProtoReflect().GetUnknown()) > 0 || len(r.Resources) > 0 {
		return nil, false
	}
	meta := len(r.SystemVersionInfo) + len(r.TypeUrl) + len(r.Nonce) + 16
	pieces := 2
	var prev []byte
	for _, e := range d.encs {
		if e.wire == nil {
			return nil, false
		}
		if !adjacent(prev, e.wire) {
			pieces++
		}
		prev = e.wire
	}
	for _, n := range r.RemovedResources {
		meta += len(n) + 4
	}
	// Every wire form is handed over, small ones too, and wire forms side
	// by side in one array (slab) as one buffer: the response's own
	// memory is its fields and this list (docs/design/200).
	w := &sliceWriter{meta: make([]byte, 0, meta), out: make(mem.BufferSlice, 0, pieces)}
	w.meta = appendString(w.meta, 1, r.SystemVersionInfo)
	w.flush()
	var run []byte     // wire forms side by side
	var alone *encoded // run is alone's wire form: handed over as &alone.wire, which allocates nothing
	endRun := func() {
		switch {
		case alone != nil:
			w.out = append(w.out, &alone.wire)
		case run != nil:
			w.out = append(w.out, mem.SliceBuffer(run))
		}
		run, alone = nil, nil
	}
	for _, e := range d.encs {
		if adjacent(run, e.wire) {
			run, alone = run[:len(run)+len(e.wire)], nil
			continue
		}
		endRun()
		run, alone = e.wire, e
	}
	endRun()
	rest := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: r.TypeUrl, RemovedResources: r.RemovedResources,
		RemovedResourceNames: r.RemovedResourceNames, Nonce: r.Nonce, ControlPlane: r.ControlPlane, ResourceErrors: r.ResourceErrors}
	if !w.appendMsg(rest) {
		return nil, false
	}
	return w, true
}

// adjacent says whether b begins where a ends, in a's array (a's capacity
// runs on: slab.take): a[:len(a)+len(b)] is then both.
func adjacent(a, b []byte) bool {
	return len(a) > 0 && len(b) > 0 && cap(a)-len(a) >= len(b) && &a[:len(a)+1][len(a)] == &b[0]
}

// appendResource writes a Delta resource as field 2 of its response:
// version (1), the Any (2, its value shared), name (3). A resource with
// any other field is copied whole.
func (w *sliceWriter) appendResource(r *discoveryv3.Resource) bool {
	if r == nil {
		return false // proto's own codec says what it makes of it
	}
	if len(r.Aliases) > 0 || r.Ttl != nil || r.CacheControl != nil || r.Metadata != nil || r.ResourceName != nil ||
		len(r.ProtoReflect().GetUnknown()) > 0 || r.Resource != nil && len(r.Resource.ProtoReflect().GetUnknown()) > 0 {
		w.meta = protowire.AppendTag(w.meta, 2, protowire.BytesType)
		w.meta = protowire.AppendVarint(w.meta, uint64(plainMarshal.Size(r)))
		return w.appendMsg(r)
	}
	size := stringSize(1, r.Version) + stringSize(3, r.Name)
	if r.Resource != nil {
		size += protowire.SizeTag(2) + protowire.SizeBytes(anySize(r.Resource))
	}
	w.meta = protowire.AppendTag(w.meta, 2, protowire.BytesType)
	w.meta = protowire.AppendVarint(w.meta, uint64(size))
	w.meta = appendString(w.meta, 1, r.Version)
	if r.Resource != nil && !w.appendAny(2, r.Resource) {
		return false
	}
	w.meta = appendString(w.meta, 3, r.Name)
	return true
}

// marshalSotW writes a State-of-the-World response: version_info (1), the
// resources (2, each Any's value shared), then the other fields (3 and
// up), in field order as proto.Marshal does.
func marshalSotW(m *discoveryv3.DiscoveryResponse) (*sliceWriter, bool) {
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return nil, false
	}
	meta := len(m.VersionInfo) + len(m.TypeUrl) + len(m.Nonce) + 16
	for _, a := range m.Resources {
		meta += 16 + len(a.GetTypeUrl())
		if len(a.GetValue()) < inlineBytes {
			meta += len(a.GetValue())
		}
	}
	w := &sliceWriter{meta: make([]byte, 0, meta)}
	w.meta = appendString(w.meta, 1, m.VersionInfo)
	for _, a := range m.Resources {
		if a == nil || !w.appendAny(2, a) {
			return nil, false
		}
	}
	rest := &discoveryv3.DiscoveryResponse{Canary: m.Canary, TypeUrl: m.TypeUrl, Nonce: m.Nonce, ControlPlane: m.ControlPlane, ResourceErrors: m.ResourceErrors}
	if !w.appendMsg(rest) {
		return nil, false
	}
	return w, true
}
