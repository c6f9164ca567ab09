package xds

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"hash/maphash"
	"maps"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/weftmesh/weft/translator/envoy"
	"github.com/weftmesh/weft/translator/ir"
)

// encoded is one resource, marshalled once and shared by every group,
// proxy and response that carries the same content. Its version is a hash
// of the bytes: equal content, equal version, so an unchanged resource is
// never re-sent.
//
// It is held once per distinct content for as long as any proxy holds it,
// so it is kept small (40 bytes besides its wire form; docs/design/193,
// 194, 200): the name, version and value are windows on the wire form,
// and the Any a State-of-the-World response carries is made on the first
// such send.
type encoded struct {
	// wire is the resource as a Delta response carries it (field 2); the
	// codec hands over &wire, or one buffer for wire forms side by side
	// in a slab (deltaOut, docs/design/188, 200): a cold start of 500
	// proxies made a Resource message per resource per proxy (0.7 GB) and
	// wrote each ~130-byte envelope into a buffer of the response's own
	// (0.76 GB), all in flight together. Its fields: version (1), name
	// (3), then the Any (2), whose value comes before its type URL
	// (docs/design/194). Nil for hand-made test encodings.
	wire mem.SliceBuffer
	// anyMsg is the Any SotW responses carry (asAny), made on the first
	// such send: Delta streams never need it.
	anyMsg atomic.Pointer[anypb.Any]
	// wire[valAt:len(wire)-tailLen] is the resource's value (its
	// marshalled message), then the type URL's field (tailLen bytes);
	// wire[verAt:verAt+verLen] its version, read for every resource of a
	// push to compare with what a stream holds (sendDelta), so not
	// parsed; its name's field follows.
	valAt   uint32
	verLen  uint16
	verAt   uint8
	tailLen uint8
}

// newEncoded makes the encoding of value, a typeURL resource called name,
// with its wire form of its own.
func newEncoded(typeURL, name, version string, value []byte) *encoded {
	return newEncodedIn(nil, typeURL, name, version, value)
}

// newEncodedIn is newEncoded with the wire form carved from s, if set and
// the wire form is small (slab.take).
func newEncodedIn(s *slab, typeURL, name, version string, value []byte) *encoded {
	tail := typeURLField(typeURL)
	anyLen := len(tail)
	if len(value) > 0 {
		anyLen += protowire.SizeTag(2) + protowire.SizeBytes(len(value))
	}
	resLen := stringSize(3, name) + stringSize(1, version) + protowire.SizeTag(2) + protowire.SizeBytes(anyLen)
	size := protowire.SizeTag(2) + protowire.SizeBytes(resLen)
	if len(version) > math.MaxUint16 || len(tail) > math.MaxUint8 {
		panic("xds: a version of more than 65,535 bytes, or a type URL field of more than 255") // weft's are 16, and under 100
	}
	wire := s.take(size)
	wire = protowire.AppendTag(wire, 2, protowire.BytesType)
	wire = protowire.AppendVarint(wire, uint64(resLen))
	wire = appendString(wire, 1, version)
	verAt := len(wire) - len(version)
	wire = appendString(wire, 3, name)
	wire = protowire.AppendTag(wire, 2, protowire.BytesType)
	wire = protowire.AppendVarint(wire, uint64(anyLen))
	if len(value) > 0 {
		wire = protowire.AppendTag(wire, 2, protowire.BytesType)
		wire = protowire.AppendVarint(wire, uint64(len(value)))
	}
	valAt := len(wire)
	wire = append(wire, value...)
	wire = append(wire, tail...)
	if len(wire) != size {
		// Past size, the appends would have written over the next wire
		// form of the slab's array.
		panic(fmt.Sprintf("xds: a wire form of %d bytes, sized %d", len(wire), size))
	}
	return &encoded{wire: wire, valAt: uint32(valAt), verAt: uint8(verAt), verLen: uint16(len(version)), tailLen: uint8(len(tail))}
}

// slab hands out the wire forms of one encoding pass (a Part's, a
// snapshot's) side by side, so that a response carrying them in the
// order they were made hands gRPC one buffer for many (responseCodec
// merges adjacent ones): a cold start sends a Part's resources in name
// order, the order encodePart makes them in. gRPC writes a response in
// 16 KiB frames, each from a list of the buffers it spans, which it keeps
// between frames while it holds at most 64 (grown by doubling: 37, then
// 74); a frame of ~220-byte route configurations spanned 74, of clusters
// with their type URL apart 46, and each such frame grew a new list
// (docs/design/200). A slab's arrays live as long as any wire form in
// them: each array is at most what the pass had taken before it (the
// first wire form gets one of its own size), so a pass of a few
// encodings (an endpoint patch, a group's own listener) wastes nothing,
// and a large one at most one array's unused end. The zero slab (and a
// nil one) gives every wire form an array of its own.
type slab struct {
	free  []byte // free[len(free):cap(free)] is not handed out yet
	taken int
}

// slabMaxBytes: the largest array a slab makes, and a wire form longer
// than a quarter of it gets its own (one buffer whatever it is next to).
const slabMaxBytes = 16 << 10

// take returns an empty slice to append a wire form of n bytes to. Its
// capacity runs to the end of its array, so that responseCodec can tell
// that two wire forms are adjacent: nothing may append to a wire form
// once it is made.
func (s *slab) take(n int) []byte {
	if s == nil || n > slabMaxBytes/4 {
		return make([]byte, 0, n)
	}
	if cap(s.free)-len(s.free) < n {
		s.free = make([]byte, 0, min(max(n, s.taken), slabMaxBytes))
	}
	b := s.free[len(s.free):len(s.free)]
	s.free = s.free[:len(s.free)+n]
	s.taken += n
	return b
}

// typeURLFields holds, by type URL, the Any field naming it (typeURLField).
var typeURLFields sync.Map // string → []byte

// typeURLField returns the Any's type_url field (1) of typeURL, made once
// per type URL.
func typeURLField(typeURL string) []byte {
	if b, ok := typeURLFields.Load(typeURL); ok {
		return b.([]byte)
	}
	b, _ := typeURLFields.LoadOrStore(typeURL, protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), typeURL))
	return b.([]byte)
}

// field returns the string field num of wire[at:] if it is there, and
// where the next field starts.
func field(wire []byte, at int, num protowire.Number) (string, int) {
	if at >= len(wire) {
		return "", at
	}
	n, typ, k := protowire.ConsumeTag(wire[at:])
	if k < 0 || n != num || typ != protowire.BytesType {
		return "", at
	}
	l, m := protowire.ConsumeVarint(wire[at+k:])
	if m < 0 {
		return "", at
	}
	start := at + k + m
	return window(wire, start, int(l)), start + int(l)
}

// name is the resource's name: the field after the version (where the
// version would be if it is empty).
func (e *encoded) name() string {
	s, _ := field(e.wire, int(e.verAt)+int(e.verLen), 3)
	return s
}

// version is the resource's version: the hex of its content's hash.
func (e *encoded) version() string { return window(e.wire, int(e.verAt), int(e.verLen)) }

// valEnd is where the value ends in wire: at the type URL.
func (e *encoded) valEnd() int { return len(e.wire) - int(e.tailLen) }

// window is the string of b[at:at+n], sharing b's bytes (b is never
// written after).
func window(b []byte, at, n int) string {
	if n == 0 {
		return ""
	}
	return unsafe.String(&b[at], n)
}

// value is the resource's marshalled message.
func (e *encoded) value() []byte {
	end := e.valEnd()
	return e.wire[e.valAt:end:end]
}

// size is the length of value.
func (e *encoded) size() int { return e.valEnd() - int(e.valAt) }

// deltaSize is what the resource adds to a Delta response of typeURL (its
// type): its wire form and type URL, without reading its fields (a cold
// start asks it of every resource for every proxy).
func (e *encoded) deltaSize(typeURL string) int {
	if e.wire == nil {
		return e.size() + len(typeURL) + 16 // a hand-made test encoding
	}
	return len(e.wire)
}

// asAny returns the resource as an Any of typeURL (its type), made on the
// first call and kept: what every SotW send of it carries.
func (e *encoded) asAny(typeURL string) *anypb.Any {
	if a := e.anyMsg.Load(); a != nil {
		return a
	}
	a := e.newAny(typeURL)
	if e.anyMsg.CompareAndSwap(nil, a) {
		return a
	}
	return e.anyMsg.Load()
}

// newAny returns the resource as an Any of typeURL, not kept: for what
// needs one now and then (a made-whole Delta response, a config dump),
// whose Anys would otherwise stay as long as the encoding.
func (e *encoded) newAny(typeURL string) *anypb.Any {
	if a := e.anyMsg.Load(); a != nil {
		return a
	}
	var v []byte
	if e.size() > 0 {
		v = e.value()
	}
	return &anypb.Any{TypeUrl: typeURL, Value: v}
}

// resource returns the Delta resource e is, a typeURL resource.
func (e *encoded) resource(typeURL string) *discoveryv3.Resource {
	return &discoveryv3.Resource{Name: e.name(), Version: e.version(), Resource: e.newAny(typeURL)}
}

var marshal = proto.MarshalOptions{Deterministic: true}

// encoder encodes resources for every group of one ADS, and shares each
// distinct content between them: the endpoints of a Service, and usually
// its clusters, are byte for byte the same for every group that sees it.
// A message that translator/envoy shared between groups' builds is
// marshalled once (byMsg); any other is marshalled by each build (into a
// reused buffer, to find its content), but only new content is copied,
// validated and kept: 100 groups that see a Service hold one encoding of
// it, validated once.
//
// Entries are weak: an encoding lives as long as a snapshot holds it, and
// its entry goes with it. Secrets are never shared (each group is one
// identity), nor ever put in the cache.
type encoder struct {
	mu sync.Mutex
	// entries: by type URL, by content hash, the encoding with that
	// content (its name and bytes are compared on lookup, so a hash
	// collision costs sharing, never correctness). Dead entries are swept
	// when the maps have doubled since the last sweep (entryCount,
	// sweepAt), not by a cleanup per encoding: a cleanup and a key of two
	// strings cost ~200 bytes per encoding, a fifth of an encoded mesh
	// (issue 14, docs/design/193).
	entries             map[string]map[uint64]weak.Pointer[encoded]
	entryCount, sweepAt int
	// entriesPeak: by type URL, the most entries its map held since it
	// was last made (shrink).
	entriesPeak map[string]int
	// byMsg maps a message that translator/envoy shares between builds (a
	// Service port's endpoints, built once per *ir.Port; the clusters,
	// capture listener and gRPC routes that envoy.Shared builds once per
	// view; each Service port's listener, once per model) to its encoding: the same pointer is the same content, so it is
	// neither marshalled nor hashed again. Weak both ways: an entry goes
	// with its message.
	byMsg map[msgKey]weak.Pointer[encoded]
	// flights are the messages being encoded now: a build that needs one
	// waits for it instead of marshalling and validating it again. A cold
	// start's groups build at once and reach the same shared messages
	// together (the ~1 MB outbound listener was marshalled and validated
	// by most of them: docs/design/184).
	flights map[msgKey]*flight
	// byMsgPeak is the most entries byMsg held since it was last made
	// (shrink).
	byMsgPeak int
	bufs      sync.Pool // *[]byte
	// endpointMarshals counts the endpoint messages marshalled, and
	// msgMarshals every message marshalled through byMsg (tests).
	endpointMarshals, msgMarshals atomic.Uint64
	// maps and deps share snapshots' maps between groups (snapshot.share).
	maps *mapInterner[string, *encoded]
	deps *mapInterner[ir.ServiceKey, bool]
	// policies and since share snapshots' policy lists
	// (snapshot.sharePolicies).
	policies *sliceInterner[ir.PolicyRef]
	since    *sliceInterner[uint64]
	// orders share Parts' name orders (encodedPart.sorted) between Parts
	// made again with the same content, which groups built from either
	// hold (mergedOrder.base).
	orders *sliceInterner[*encoded]
}

// msgKey is one shared message (a weak.Pointer of its type) under one
// name.
type msgKey struct {
	msg  any
	name string
}

// flight is one message being encoded: done closes when x or err is set.
type flight struct {
	done chan struct{}
	x    *encoded
	err  error
}

// minSweep is the fewest entries at which the encoder sweeps dead ones:
// below it the maps are small whatever they hold.
const minSweep = 1024

func newEncoder() *encoder {
	return &encoder{entries: map[string]map[uint64]weak.Pointer[encoded]{}, sweepAt: minSweep, entriesPeak: map[string]int{}, byMsg: map[msgKey]weak.Pointer[encoded]{}, flights: map[msgKey]*flight{},
		maps: newMapInterner[string, *encoded](), deps: newMapInterner[ir.ServiceKey, bool](),
		policies: newSliceInterner[ir.PolicyRef](), since: newSliceInterner[uint64](), orders: newSliceInterner[*encoded]()}
}

// encode returns the encoding of m, named name: prev itself when its
// content is unchanged, else a shared encoding of the same content, else a
// new one, validated first (a resource that fails validation is never
// encoded, so never sent: a weft bug, reported as an error).
func (e *encoder) encode(typeURL, name string, m proto.Message, prev *encoded) (*encoded, error) {
	return e.encodeIn(nil, typeURL, name, m, prev)
}

// encodeIn is encode with a new wire form carved from s (a pass's slab).
func (e *encoder) encodeIn(s *slab, typeURL, name string, m proto.Message, prev *encoded) (*encoded, error) {
	// Resources may come from translator/envoy's memos: a message seen
	// before has the encoding it had then. (A message built for one group
	// alone takes the same path; its entry goes with it.)
	switch x := m.(type) {
	case *endpointv3.ClusterLoadAssignment:
		return encodeByMsg(e, s, typeURL, name, x, prev)
	case *clusterv3.Cluster:
		return encodeByMsg(e, s, typeURL, name, x, prev)
	case *listenerv3.Listener:
		return encodeByMsg(e, s, typeURL, name, x, prev)
	case *routev3.RouteConfiguration:
		return encodeByMsg(e, s, typeURL, name, x, prev)
	}
	return e.encodeContent(s, typeURL, name, m, prev)
}

// encodeByMsg is encode through byMsg. Concurrent encodings of one
// message are one: the first marshals it, the others wait for its result.
func encodeByMsg[T any, P interface {
	*T
	proto.Message
}](e *encoder, s *slab, typeURL, name string, m P, prev *encoded) (*encoded, error) {
	k := msgKey{weak.Make((*T)(m)), name}
	same := func(x *encoded) *encoded {
		if prev != nil && (prev == x || prev.version() == x.version() && bytes.Equal(prev.value(), x.value())) {
			return prev
		}
		return x
	}
	e.mu.Lock()
	if w, ok := e.byMsg[k]; ok {
		if x := w.Value(); x != nil {
			e.mu.Unlock()
			return same(x), nil
		}
	}
	if f := e.flights[k]; f != nil {
		e.mu.Unlock()
		<-f.done
		if f.err != nil {
			return nil, f.err
		}
		return same(f.x), nil
	}
	f := &flight{done: make(chan struct{})}
	e.flights[k] = f
	e.mu.Unlock()
	defer func() {
		// Also on a panic: waiters then fail with errPanicked.
		e.mu.Lock()
		delete(e.flights, k)
		e.mu.Unlock()
		close(f.done)
	}()
	if _, cla := any(m).(*endpointv3.ClusterLoadAssignment); cla {
		e.endpointMarshals.Add(1)
	}
	e.msgMarshals.Add(1)
	// Encoded without prev: prev's content is another message's, and the
	// waiters compare with theirs.
	f.err = errPanicked
	x, err := e.encodeContent(s, typeURL, name, m, nil)
	f.x, f.err = x, err
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if _, ok := e.byMsg[k]; !ok {
		runtime.AddCleanup((*T)(m), e.forgetMsg, k)
	}
	e.byMsg[k] = weak.Make(x)
	e.byMsgPeak = max(e.byMsgPeak, len(e.byMsg))
	e.mu.Unlock()
	return same(x), nil
}

// errPanicked is what waiters of an encoding that panicked see.
var errPanicked = errors.New("encoding panicked")

// forgetMsg drops the entry of a collected message.
func (e *encoder) forgetMsg(k msgKey) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.byMsg, k)
	e.byMsg = shrink(e.byMsg, &e.byMsgPeak)
}

// shrink returns m, or a copy of it sized to what it holds when it holds a
// quarter of its peak or less. A Go map never gives back the slots it
// grew: byMsg holds an entry for each message of every build until the
// message is collected, so a cold start (a build per group, between two
// collections) left it at its peak, ~6 KiB per group, for good
// (docs/design/181). Copying at a quarter keeps the cost amortized O(1)
// per delete.
func shrink[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if *peak < 256 || len(m) > *peak/4 {
		return m
	}
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	*peak = len(n)
	return n
}

// encodeContent marshals m to find its content and returns prev, a shared
// encoding of the same content, or a new one (see encode).
func (e *encoder) encodeContent(s *slab, typeURL, name string, m proto.Message, prev *encoded) (*encoded, error) {
	shared := typeURL != resourcev3.SecretType
	var buf *[]byte
	if shared {
		buf = e.buffer()
		defer e.bufs.Put(buf)
	} else {
		buf = new([]byte) // key material stays out of reused buffers
	}
	b, err := marshal.MarshalAppend((*buf)[:0], m)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %s: %w", typeURL, name, err)
	}
	*buf = b
	h := fnv.New64a()
	_, _ = h.Write(b)
	sum := h.Sum64()
	if prev != nil && bytes.Equal(prev.value(), b) {
		return prev, nil
	}
	if shared {
		if x := e.lookup(typeURL, name, sum, b); x != nil {
			return x, nil
		}
	}
	if err := envoy.ValidateResource(m); err != nil {
		return nil, fmt.Errorf("refusing to push invalid %s %s: %w", shortType(typeURL), name, err)
	}
	if !shared {
		return newEncoded(typeURL, name, fmt.Sprintf("%016x", sum), b), nil
	}
	x := newEncodedIn(s, typeURL, name, fmt.Sprintf("%016x", sum), b)
	e.mu.Lock()
	defer e.mu.Unlock()
	byHash := e.entries[typeURL]
	if byHash == nil {
		byHash = map[uint64]weak.Pointer[encoded]{}
		e.entries[typeURL] = byHash
	}
	w, ok := byHash[sum]
	// Another build may have added the same content meanwhile: use its.
	if y := w.Value(); y != nil && y.name() == name && bytes.Equal(y.value(), b) {
		return y, nil
	}
	byHash[sum] = weak.Make(x)
	if !ok {
		e.entriesPeak[typeURL] = max(e.entriesPeak[typeURL], len(byHash))
		e.entryCount++
		if e.entryCount >= e.sweepAt {
			e.sweep()
		}
	}
	return x, nil
}

// sweep drops the entries of collected encodings, and gives back the
// slots of maps that shrank to a quarter (shrink). Called when the
// entries have doubled since the last sweep, it costs O(1) per entry
// added, and the maps hold at most twice the live encodings (or
// minSweep).
func (e *encoder) sweep() {
	e.entryCount = 0
	for typ, byHash := range e.entries {
		for k, w := range byHash {
			if w.Value() == nil {
				delete(byHash, k)
			}
		}
		if len(byHash) == 0 {
			delete(e.entries, typ)
			delete(e.entriesPeak, typ)
			continue
		}
		peak := e.entriesPeak[typ]
		e.entries[typ] = shrink(byHash, &peak)
		e.entriesPeak[typ] = peak
		e.entryCount += len(byHash)
	}
	e.sweepAt = max(2*e.entryCount, minSweep)
}

// encodedPart is an envoy.Part encoded: by the type's index in
// pushOrder, the map of its resources' encodings, interned
// (encoder.maps), and the map's anchor.
type encodedPart struct {
	enc     *encoder
	maps    [len(pushOrder)]map[string]*encoded
	anchors [len(pushOrder)]any
	// sorted: each map's resources in name order (mergedOrder), shared
	// (encoder.orders); nil for an empty map.
	sorted [len(pushOrder)]*sliceAnchor[*encoded]
	// splits: holdsSplit of the endpoints.
	splits bool
	err    error
	// deps: the Part's Deps as a set, interned (encoder.deps), with its
	// anchor: a group whose Resources.Deps are the Part's takes them.
	deps       map[ir.ServiceKey]bool
	depsAnchor any
	// merged: the maps made of this part's and a group's own resources
	// (snapshot.onto), for the next group with the same own ones. An
	// object of its own: the cleanups it registers on anchors refer to
	// it, and must not reach an anchor (one of this part's may be a
	// merged map too, when a group's own resources are all the part's).
	merged *mergedMaps
}

// mergedMaps remembers, per type, the map a Part's map and a group's own
// resources made, so that a group with the same own resources (a replica,
// or another workload whose own resources encode alike) takes it without
// copying the Part's 2,000 entries and interning the copy: per group of a
// 500-proxy cold start that was three such copies, 0.26 of weft's 4.5 CPU
// seconds and 120 MB of garbage. Entries are weak, as mapInterner's: a
// merged map lives as long as a snapshot holds its anchor.
type mergedMaps struct {
	mu      sync.Mutex
	entries map[mergedKey]mergedEntry
}

// mergedKey names a group's own resources of one type: the type's index,
// their number and an order-independent hash of names and encodings.
type mergedKey struct {
	at, n int
	sum   uint64
}

type mergedEntry struct {
	own map[string]*encoded
	a   weak.Pointer[anchor[string, *encoded]]
}

func mergedKeyOf(at int, own map[string]*encoded) mergedKey {
	var sum uint64
	for k, v := range own {
		sum += mix(maphash.Comparable(internSeed, k), maphash.Comparable(internSeed, v))
	}
	return mergedKey{at, len(own), sum}
}

// find returns the live anchor of the map made with own, or nil.
func (m *mergedMaps) find(key mergedKey, own map[string]*encoded) *anchor[string, *encoded] {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok && maps.Equal(e.own, own) {
		return e.a.Value()
	}
	return nil
}

// remember records a, the anchor of the map made with own.
func (m *mergedMaps) remember(key mergedKey, own map[string]*encoded, a *anchor[string, *encoded]) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.entries == nil {
		m.entries = map[mergedKey]mergedEntry{}
	}
	m.entries[key] = mergedEntry{own: own, a: weak.Make(a)}
	runtime.AddCleanup(a, m.forget, key)
}

// forget drops the entry of a collected anchor, unless the key was given
// a new one since.
func (m *mergedMaps) forget(key mergedKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok && e.a.Value() == nil {
		delete(m.entries, key)
	}
}

// part returns p encoded, once for every group that holds it
// (envoy.Part.Memo keeps it as long as p lives). An error is a resource
// of p that failed validation: a weft bug, as encode's.
func (e *encoder) part(p *envoy.Part) (*encodedPart, error) {
	x := p.Memo(func() any { return e.encodePart(p) }).(*encodedPart)
	if x.enc != e {
		// Encoded by another ADS's encoder (tests that share a Shared):
		// its encodings are not this one's to share.
		x = e.encodePart(p)
	}
	return x, x.err
}

func (e *encoder) encodePart(p *envoy.Part) *encodedPart {
	x := &encodedPart{enc: e, merged: &mergedMaps{}}
	var s slab // the Part's new wire forms side by side, in the order they are sent
	add := func(i int, typeURL, name string, m proto.Message, n int) {
		if x.err != nil {
			return
		}
		enc, err := e.encodeIn(&s, typeURL, name, m, nil)
		if err != nil {
			x.err = err
			return
		}
		if x.maps[i] == nil {
			x.maps[i] = make(map[string]*encoded, n)
		}
		x.maps[i][enc.name()] = enc // the key shares the wire form's bytes
	}
	for _, m := range p.Clusters {
		add(clustersAt, resourcev3.ClusterType, m.Name, m, len(p.Clusters))
	}
	for _, m := range p.Endpoints {
		add(endpointsAt, resourcev3.EndpointType, m.ClusterName, m, len(p.Endpoints))
	}
	for _, m := range p.Listeners {
		add(listenersAt, resourcev3.ListenerType, m.Name, m, len(p.Listeners))
	}
	for _, m := range p.Routes {
		add(routesAt, resourcev3.RouteType, m.Name, m, len(p.Routes))
	}
	if x.err != nil {
		return x
	}
	for i, t := range pushOrder {
		m, a := e.maps.intern(t, x.maps[i])
		if a == nil {
			continue // none of the type
		}
		x.maps[i], x.anchors[i] = m, a
		l := a.sorted.Load()
		if l == nil {
			// The map is new, or made again after the last Part with it
			// went (its Shared collected): the groups built from that
			// Part hold its order still, and take the same one here
			// (encoder.orders), not a copy per Part made.
			_, l = e.orders.intern(t, slices.SortedFunc(maps.Values(m), byName))
			if !a.sorted.CompareAndSwap(nil, l) {
				l = a.sorted.Load()
			}
		}
		x.sorted[i] = l
	}
	x.splits = holdsSplit(x.maps[endpointsAt])
	x.deps = make(map[ir.ServiceKey]bool, len(p.Deps))
	for _, k := range p.Deps {
		x.deps[k] = true
	}
	if d, a := e.deps.intern("deps", x.deps); a != nil {
		x.deps, x.depsAnchor = d, a
	}
	return x
}

// lookup returns the live encoding of the typeURL resource name whose
// content is b (its hash sum), or nil.
func (e *encoder) lookup(typeURL, name string, sum uint64, b []byte) *encoded {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.entries[typeURL][sum].Value(); x != nil && x.name() == name && bytes.Equal(x.value(), b) {
		return x
	}
	return nil
}

// size is the number of distinct encodings held (for tests): it sweeps
// first.
func (e *encoder) size() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sweep()
	return e.entryCount
}

func (e *encoder) buffer() *[]byte {
	if b, ok := e.bufs.Get().(*[]byte); ok {
		return b
	}
	return new([]byte)
}
