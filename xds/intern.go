package xds

import (
	"hash/maphash"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"weak"
)

// Groups that see the same Services hold the same clusters and endpoints,
// encoded once (encoder) — and, since every proxy that is its own workload
// is its own group, also the same name → encoding maps of 2,000 entries
// each, and the same set of Services they depend on. A mapInterner shares
// those maps: a snapshot's map of a type whose content (names and
// encodings, compared by identity) equals another live snapshot's is that
// map. 500 groups that see every Service hold one CDS and one EDS map,
// not 500 (docs/design/095).
//
// Entries are weak: a shared map lives as long as a snapshot holds its
// anchor, and its entry goes with it.
type mapInterner[K, V comparable] struct {
	mu      sync.Mutex
	entries map[internKey]weak.Pointer[anchor[K, V]]
}

// anchor keeps a shared map's entry alive: every snapshot holding the map
// holds its anchor.
type anchor[K, V comparable] struct {
	m map[K]V
	// version caches a resource map's SotW and system version
	// (snapshot.typeVersion): computed once per shared map, not once per
	// group and stream.
	version atomic.Pointer[string]
	// sorted caches the map's values in the order a Part sends them
	// (encodedPart.sorted): a Part made again with the same content (a
	// new Shared, after the last was collected: each such Part of a
	// scoped mesh is one namespace's) takes the list instead of sorting.
	sorted atomic.Pointer[sliceAnchor[V]]
}

// internKey names a content: kind (the type URL), size and an
// order-independent hash of the entries. Equal keys are compared entry by
// entry, so a collision costs sharing, never correctness.
type internKey struct {
	kind string
	n    int
	sum  uint64
}

var internSeed = maphash.MakeSeed()

func newMapInterner[K, V comparable]() *mapInterner[K, V] {
	return &mapInterner[K, V]{entries: map[internKey]weak.Pointer[anchor[K, V]]{}}
}

// intern returns the shared map equal to m (m itself when none is live),
// and its anchor, which the caller keeps as long as it keeps the map. m
// must not be written after.
func (in *mapInterner[K, V]) intern(kind string, m map[K]V) (map[K]V, *anchor[K, V]) {
	if len(m) == 0 {
		return m, nil
	}
	var sum uint64
	for k, v := range m {
		sum += mix(maphash.Comparable(internSeed, k), maphash.Comparable(internSeed, v))
	}
	key := internKey{kind, len(m), sum}
	in.mu.Lock()
	defer in.mu.Unlock()
	if w, ok := in.entries[key]; ok {
		if a := w.Value(); a != nil && maps.Equal(a.m, m) {
			return a.m, a
		}
	}
	a := &anchor[K, V]{m: m}
	in.entries[key] = weak.Make(a)
	runtime.AddCleanup(a, in.forget, key)
	return m, a
}

// forget drops the entry of a collected anchor, unless the key was given
// a new one since.
func (in *mapInterner[K, V]) forget(key internKey) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if w, ok := in.entries[key]; ok && w.Value() == nil {
		delete(in.entries, key)
	}
}

// mix combines a key's and a value's hashes into an entry's.
func mix(a, b uint64) uint64 {
	h := a ^ (b*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	return h
}

// sliceInterner shares equal slices between snapshots as mapInterner
// shares maps: the policies a group's configuration carries and the
// generations since which it carries each (snapshot.policies, since) are
// the same for every group that sees the same Services — 200
// TrafficSplits visible everywhere are 12 KiB per group otherwise
// (docs/design/180). Entries are weak, held by the snapshots' anchors.
type sliceInterner[T comparable] struct {
	mu      sync.Mutex
	entries map[internKey]weak.Pointer[sliceAnchor[T]]
}

// sliceAnchor keeps a shared slice's entry alive.
type sliceAnchor[T comparable] struct{ s []T }

func newSliceInterner[T comparable]() *sliceInterner[T] {
	return &sliceInterner[T]{entries: map[internKey]weak.Pointer[sliceAnchor[T]]{}}
}

// intern returns the shared slice equal to s (s itself when none is
// live) and its anchor. s must not be written after.
func (in *sliceInterner[T]) intern(kind string, s []T) ([]T, *sliceAnchor[T]) {
	if len(s) == 0 {
		return s, nil
	}
	var sum uint64
	for _, x := range s {
		sum = mix(sum, maphash.Comparable(internSeed, x))
	}
	key := internKey{kind, len(s), sum}
	in.mu.Lock()
	defer in.mu.Unlock()
	if w, ok := in.entries[key]; ok {
		if a := w.Value(); a != nil && slices.Equal(a.s, s) {
			return a.s, a
		}
	}
	a := &sliceAnchor[T]{s: s}
	in.entries[key] = weak.Make(a)
	runtime.AddCleanup(a, in.forget, key)
	return s, a
}

func (in *sliceInterner[T]) forget(key internKey) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if w, ok := in.entries[key]; ok && w.Value() == nil {
		delete(in.entries, key)
	}
}
