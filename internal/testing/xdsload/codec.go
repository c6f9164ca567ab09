package xdsload

import (
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"unicode/utf8"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// responseCodec is gRPC's proto codec, except that it decodes Delta
// discovery responses as a simulated proxy reads them: the resources'
// encoded values are windows on the received message instead of copies,
// and names, versions and type URLs are interned across every proxy of
// the process (they are the same strings in every proxy's configuration).
//
// The simulated proxies share the measured control plane's two cores: a
// 500-proxy cold start of issue 14's mesh decodes 2.6 GB, and gRPC's proto
// codec copied every resource's bytes and allocated its strings, part of
// the harness's 12 CPU seconds against weft's 8-9 (docs/design/100). What a proxy
// does with a response is unchanged; the message it gets is equal
// (proto.Equal) to what proto.Unmarshal gives (TestResponseCodecDecodes).
// A field it does not decode itself (istiod's control_plane, resource
// TTLs, errors) is decoded by proto.Unmarshal into the same message.
type responseCodec struct {
	proto encoding.CodecV2
}

var codec = responseCodec{proto: encoding.GetCodecV2(protoenc.Name)}

// Name is the proto codec's: the content type is unchanged.
func (responseCodec) Name() string { return protoenc.Name }

func (c responseCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c responseCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch x := v.(type) {
	case *received:
		// Decoded where gRPC received it, in its frame buffers, kept
		// (Ref) until release: only a field across two of them is
		// copied (segments). Copying the whole message into one buffer
		// first was 1.2 of the harness's 7.7 CPU seconds in a 500-proxy
		// cold start.
		segs := make([][]byte, len(data))
		for i, b := range data {
			segs[i] = b.ReadOnlyData()
		}
		sl := responseSlabs.get(countResources(&segments{segs: segs}))
		x.r = &discoveryv3.DeltaDiscoveryResponse{}
		if err := decodeDeltaFrom(&segments{segs: segs, scratch: &sl.scratch}, x.r, sl); err != nil {
			responseSlabs.put(sl)
			x.r = nil // its values were in sl and in data
			return err
		}
		data.Ref()
		x.data, x.slab = data, sl
		return nil
	case *discoveryv3.DeltaDiscoveryResponse:
		// A copy of its own, kept as long as the response is.
		return decodeDelta(data.Materialize(), x)
	}
	return c.proto.Unmarshal(data, v)
}

// received is a response as Proxy.Run reads it: its values point into
// data, gRPC's buffers, which go back to gRPC's pool at release, and into
// slab, which goes back to responseSlabs. Nothing may keep a value after
// that.
type received struct {
	r    *discoveryv3.DeltaDiscoveryResponse
	data mem.BufferSlice
	slab *slab
}

func (x *received) release() {
	if x.data != nil {
		x.data.Free()
		x.data = nil
	}
	if x.slab != nil {
		responseSlabs.put(x.slab)
		x.slab = nil
	}
	x.r = nil
}

// Wire field numbers (envoy/service/discovery/v3/discovery.proto).
const (
	responseVersionInfo = 1
	responseResources   = 2
	responseTypeURL     = 4
	responseNonce       = 5
	responseRemoved     = 6

	resourceVersion = 1
	resourceValue   = 2
	resourceName    = 3

	anyTypeURL = 1
	anyValue   = 2
)

// decodeDelta decodes b into r as proto.Unmarshal does.
func decodeDelta(b []byte, r *discoveryv3.DeltaDiscoveryResponse) error {
	s := &segments{segs: [][]byte{b}}
	return decodeDeltaFrom(s, r, newSlab(countResources(&segments{segs: s.segs})))
}

// decodeDeltaFrom decodes the message s holds into r, as proto.Unmarshal
// does, with the messages of sl, which should have room for its
// resources (countResources).
func decodeDeltaFrom(s *segments, r *discoveryv3.DeltaDiscoveryResponse, sl *slab) error {
	r.Reset()
	r.Resources = sl.ptrs[:0]
	decode := func(num protowire.Number, v []byte) (bool, error) {
		var err error
		switch num {
		case responseVersionInfo:
			r.SystemVersionInfo, err = names.intern(v)
		case responseTypeURL:
			r.TypeUrl, err = names.intern(v)
		case responseNonce:
			if !utf8.Valid(v) {
				return true, errInvalidUTF8
			}
			r.Nonce = string(v)
		case responseRemoved:
			var s string
			s, err = names.intern(v)
			r.RemovedResources = append(r.RemovedResources, s)
		case responseResources:
			var res *discoveryv3.Resource
			res, err = decodeResource(v, sl)
			r.Resources = append(r.Resources, res)
		default:
			return false, nil
		}
		return true, err
	}
	for !s.done() {
		num, typ, n, err := s.header()
		if err != nil {
			return err
		}
		if n < 0 {
			// A group: its length is known only by walking it. The rest
			// of the message, in one piece.
			return decodeFields(s.rest(), r, decode)
		}
		field, err := s.take(n)
		if err != nil {
			return err
		}
		_, _, k := protowire.ConsumeTag(field)
		if err := decodeField(r, field, num, typ, k, decode); err != nil {
			return err
		}
	}
	return nil
}

// segments is an encoded message in pieces (gRPC's frame buffers), read
// field by field: a field within one piece is a window on it, a field
// across pieces a copy, appended to *scratch.
type segments struct {
	segs    [][]byte
	i, off  int // the next byte: segs[i][off]
	scratch *[]byte
}

// errTruncated is a field that runs past the message's end.
var errTruncated = errors.New("xdsload: truncated message")

func (s *segments) done() bool {
	for s.i < len(s.segs) && s.off == len(s.segs[s.i]) {
		s.i, s.off = s.i+1, 0
	}
	return s.i == len(s.segs)
}

// header reads, without consuming it, the next field's tag and returns
// its number, wire type and whole length (tag included); n is -1 for a
// group.
func (s *segments) header() (num protowire.Number, typ protowire.Type, n int, err error) {
	var buf [2 * binary.MaxVarintLen64]byte
	h := s.peek(buf[:])
	num, typ, k := protowire.ConsumeTag(h)
	if k < 0 {
		return 0, 0, 0, protowire.ParseError(k)
	}
	switch typ {
	case protowire.BytesType:
		l, m := protowire.ConsumeVarint(h[k:])
		if m < 0 {
			return 0, 0, 0, protowire.ParseError(m)
		}
		if l > math.MaxInt32 {
			return 0, 0, 0, errTruncated
		}
		return num, typ, k + m + int(l), nil
	case protowire.VarintType:
		_, m := protowire.ConsumeVarint(h[k:])
		if m < 0 {
			return 0, 0, 0, protowire.ParseError(m)
		}
		return num, typ, k + m, nil
	case protowire.Fixed32Type:
		return num, typ, k + 4, nil
	case protowire.Fixed64Type:
		return num, typ, k + 8, nil
	}
	return num, typ, -1, nil
}

// peek copies the next bytes, up to len(buf), into buf.
func (s *segments) peek(buf []byte) []byte {
	n := 0
	for i, off := s.i, s.off; i < len(s.segs) && n < len(buf); i, off = i+1, 0 {
		n += copy(buf[n:], s.segs[i][off:])
	}
	return buf[:n]
}

// take consumes the next n bytes: a window on a piece when they are in
// one, else a copy.
func (s *segments) take(n int) ([]byte, error) {
	s.done() // to the first piece with bytes left
	if s.i < len(s.segs) && len(s.segs[s.i])-s.off >= n {
		b := s.segs[s.i][s.off : s.off+n : s.off+n]
		s.off += n
		return b, nil
	}
	if s.scratch == nil {
		s.scratch = new([]byte)
	}
	start := len(*s.scratch)
	for n > 0 && !s.done() {
		k := min(n, len(s.segs[s.i])-s.off)
		*s.scratch = append(*s.scratch, s.segs[s.i][s.off:s.off+k]...)
		s.off += k
		n -= k
	}
	if n > 0 {
		return nil, errTruncated
	}
	b := (*s.scratch)[start:]
	return b[:len(b):len(b)], nil
}

// rest consumes what is left, in one piece.
func (s *segments) rest() []byte {
	var b []byte
	for !s.done() {
		b = append(b, s.segs[s.i][s.off:]...)
		s.off = len(s.segs[s.i])
	}
	return b
}

// slab hands out the Resources and Anys of one response from one
// allocation each, not two per resource: a 500-proxy cold start decodes 4
// million resources, and their allocations were a tenth of the harness's
// CPU. Proxy.Run's slabs are kept for the next response (responseSlabs);
// a decodeDelta's live as long as any of its resources is referenced.
type slab struct {
	res  []discoveryv3.Resource
	anys []anypb.Any
	ptrs []*discoveryv3.Resource // the response's list
	// scratch holds the fields that lay across two of gRPC's buffers.
	scratch []byte
	// used counts what was handed out of res and anys.
	usedRes, usedAnys int
}

func newSlab(n int) *slab {
	return &slab{res: make([]discoveryv3.Resource, n), anys: make([]anypb.Any, n), ptrs: make([]*discoveryv3.Resource, 0, n)}
}

func (s *slab) resource() *discoveryv3.Resource { return take(s.res, &s.usedRes) }

func (s *slab) any() *anypb.Any { return take(s.anys, &s.usedAnys) }

// take hands out the next element of free, or a new one when none is
// left.
func take[T any](free []T, used *int) *T {
	if *used == len(free) {
		return new(T)
	}
	*used++
	return &free[*used-1]
}

// reset zeroes what was handed out, for the next response.
func (s *slab) reset() {
	clear(s.res[:s.usedRes])
	clear(s.anys[:s.usedAnys])
	clear(s.ptrs[:cap(s.ptrs)])
	s.usedRes, s.usedAnys, s.ptrs, s.scratch = 0, 0, s.ptrs[:0], s.scratch[:0]
}

func (s *slab) size() int { return min(len(s.res), len(s.anys), cap(s.ptrs)) }

// responseSlabs are the slabs Proxy.Run decodes responses with. A new
// slab per response wrote every message into fresh pages: in a 500-proxy
// cold start the first writes into them were 2 of the harness's 9.7 CPU
// seconds (page faults on this VM).
var responseSlabs = &keptSlabs{keep: 64}

// keptSlabs keeps up to keep slabs of released responses, however many
// collections pass (a proxy holds one from reading a response to reading
// the next, so a few dozen serve a fleet of hundreds).
type keptSlabs struct {
	keep int

	mu   sync.Mutex
	free []*slab
}

// get returns a slab with room for n resources, nothing in it.
func (p *keptSlabs) get(n int) *slab {
	p.mu.Lock()
	for i := len(p.free) - 1; i >= 0; i-- {
		if s := p.free[i]; s.size() >= n {
			p.free = append(p.free[:i], p.free[i+1:]...)
			p.mu.Unlock()
			return s
		}
	}
	if k := len(p.free); k > 0 {
		p.free = p.free[:k-1] // too small: replaced by a larger one
	}
	p.mu.Unlock()
	return newSlab(n + n/4)
}

// put takes back a slab nothing refers to any more.
func (p *keptSlabs) put(s *slab) {
	s.reset()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < p.keep {
		p.free = append(p.free, s)
	}
}

// countResources counts the resources field's occurrences in an encoded
// response (up to a malformed field or a group, which decoding reports or
// walks), consuming s.
func countResources(s *segments) int {
	n := 0
	for !s.done() {
		num, typ, k, err := s.header()
		if err != nil || k < 0 {
			return n
		}
		if num == responseResources && typ == protowire.BytesType {
			n++
		}
		if !s.skip(k) {
			return n
		}
	}
	return n
}

// skip consumes the next n bytes; false if there are fewer.
func (s *segments) skip(n int) bool {
	for n > 0 && !s.done() {
		k := min(n, len(s.segs[s.i])-s.off)
		s.off += k
		n -= k
	}
	return n == 0
}

func decodeResource(b []byte, sl *slab) (*discoveryv3.Resource, error) {
	res := sl.resource()
	err := decodeFields(b, res, func(num protowire.Number, v []byte) (bool, error) {
		var err error
		switch num {
		case resourceVersion:
			res.Version, err = names.intern(v)
		case resourceName:
			res.Name, err = names.intern(v)
		case resourceValue:
			if res.Resource != nil {
				return false, nil // a message field seen twice merges: proto's
			}
			a := sl.any()
			if !decodeAny(v, a) {
				a.Reset() // left to proto; a is not used
				return false, nil
			}
			res.Resource = a
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// decodeFields walks the fields of the encoded message b: decode takes
// each length-delimited one it knows (true), and any other field is
// decoded into m by proto.Unmarshal, merged in.
func decodeFields(b []byte, m proto.Message, decode func(num protowire.Number, v []byte) (bool, error)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		k := protowire.ConsumeFieldValue(num, typ, b[n:])
		if k < 0 {
			return protowire.ParseError(k)
		}
		field := b[:n+k]
		b = b[n+k:]
		if err := decodeField(m, field, num, typ, n, decode); err != nil {
			return err
		}
	}
	return nil
}

// decodeField hands a length-delimited field's value (after its tag of
// tagLen bytes) to decode, and merges a field decode does not take into m
// with proto.Unmarshal.
func decodeField(m proto.Message, field []byte, num protowire.Number, typ protowire.Type, tagLen int, decode func(num protowire.Number, v []byte) (bool, error)) error {
	if typ == protowire.BytesType {
		v, _ := protowire.ConsumeBytes(field[tagLen:])
		if done, err := decode(num, v); err != nil || done {
			return err
		}
	}
	return merge.Unmarshal(field, m)
}

var merge = proto.UnmarshalOptions{Merge: true}

// decodeAny decodes an Any of a type URL and a value, each at most once,
// and nothing else; ok is false for anything else.
func decodeAny(b []byte, a *anypb.Any) (ok bool) {
	var seenURL, seenValue bool
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType {
			return false
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return false
		}
		b = b[n+m:]
		switch {
		case num == anyTypeURL && !seenURL:
			s, err := names.intern(v)
			if err != nil {
				return false // proto.Unmarshal reports it
			}
			a.TypeUrl, seenURL = s, true
		case num == anyValue && !seenValue:
			a.Value, seenValue = v[:len(v):len(v)], true
		default:
			return false
		}
	}
	return true
}

// interner hands out one string per distinct content.
type interner struct {
	mu sync.RWMutex
	m  map[string]string
}

// names is the process's table of names, versions and type URLs.
var names interner

// maxInterned bounds the table: when full it starts over (strings handed
// out stay valid; only sharing is lost).
const maxInterned = 1 << 20

// intern returns b as a string, refusing invalid UTF-8 as proto.Unmarshal
// does for proto3 strings (only new contents are checked: the table holds
// valid ones).
func (t *interner) intern(b []byte) (string, error) {
	// Nearly every call finds the string: readers do not wait for each
	// other (a plain mutex was a twentieth of the harness's CPU).
	t.mu.RLock()
	s, ok := t.m[string(b)]
	t.mu.RUnlock()
	if ok {
		return s, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.m[string(b)]; ok {
		return s, nil
	}
	if !utf8.Valid(b) {
		return "", errInvalidUTF8
	}
	if t.m == nil || len(t.m) >= maxInterned {
		t.m = make(map[string]string, 1024)
	}
	s = string(b)
	t.m[s] = s
	return s, nil
}

var errInvalidUTF8 = errors.New("xdsload: string field contains invalid UTF-8")
