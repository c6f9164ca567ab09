package xds

import "sync"

// subscription is the names a stream subscribes to of one type (wildcard
// aside), kept as what differs from a snapshot's resources of the type,
// as versionMap keeps versions (docs/design/185): the names are base's,
// but those in out, and those in in. Envoy names every endpoint and
// route configuration it holds — ~2,000 each at issue 14's size — so a
// stream in step with its group holds a pointer to the shared snapshot
// map, not its own map of its own copies of 4,000 names (~360 KiB per
// proxy measured, each name a string the request's decoding allocated).
type subscription struct {
	base map[string]*encoded
	in   map[string]struct{}
	out  map[string]struct{}
}

// has says whether the subscription names n.
func (s *subscription) has(n string) bool {
	if s == nil {
		return false
	}
	if _, ok := s.in[n]; ok {
		return true
	}
	if _, ok := s.base[n]; !ok {
		return false
	}
	_, gone := s.out[n]
	return !gone
}

// hasOf is has for the names of have only: a subscription over have
// itself answers from out alone, or without looking when out is empty
// (a stream in step with its snapshot), where has looks in three maps.
func (s *subscription) hasOf(have map[string]*encoded) func(string) bool {
	if s != nil && s.base != nil && sameMap(s.base, have) { // (in never holds a name of base)
		if len(s.out) == 0 {
			return func(string) bool { return true }
		}
		return func(n string) bool {
			_, gone := s.out[n]
			return !gone
		}
	}
	return s.has
}

// len is the number of names.
func (s *subscription) len() int {
	if s == nil {
		return 0
	}
	return len(s.base) - len(s.out) + len(s.in)
}

// add subscribes to n. A name of base takes no memory; another is kept
// as have's own string when have holds it (the snapshot's, shared),
// so that the request that named it can be collected.
func (s *subscription) add(n string, have map[string]*encoded) {
	if _, ok := s.base[n]; ok {
		delete(s.out, n)
		if len(s.out) == 0 {
			s.out = nil // its room goes too (versionMap.forget)
		}
		return
	}
	if e, ok := have[n]; ok {
		n = e.name()
	}
	if s.in == nil {
		s.in = map[string]struct{}{}
	}
	s.in[n] = struct{}{}
}

// addAll subscribes to names, as add does to each. A stream subscribing
// to nothing yet that names most of have at once (Envoy's first EDS or
// RDS request, the names its clusters or listeners give) is expressed
// over have straight away: the names it leaves out, not the thousands it
// names, are what it keeps. Adding them one by one filled in with a map of
// them (its growth and garbage were a tenth of a large cold start's
// server CPU), which the next rebase turned back into have and out.
func (s *subscription) addAll(names []string, have map[string]*encoded) {
	if s.len() > 0 || len(have) == 0 || 2*len(names) < len(have) {
		for _, n := range names {
			s.add(n, have)
		}
		return
	}
	// named: the resources of have the request names, each once, by
	// pointer (an encoding holds its name, so each name of have has its
	// own): hashing a pointer, not the name again.
	named := namedScratch.Get().(map[*encoded]struct{})
	defer func() {
		clear(named)
		namedScratch.Put(named)
	}()
	var in, out map[string]struct{}
	for _, n := range names {
		if e, ok := have[n]; ok {
			named[e] = struct{}{}
			continue
		}
		if in == nil {
			in = map[string]struct{}{}
		}
		in[n] = struct{}{}
	}
	if len(named) < len(have) { // (else every name of have: out is empty)
		out = make(map[string]struct{}, len(have)-len(named))
		for _, e := range have {
			if _, ok := named[e]; !ok {
				out[e.name()] = struct{}{}
			}
		}
	}
	if len(out) > len(named)+len(in) {
		// Most of have not named after all (names repeated): a plain
		// set, as rebase keeps it.
		for _, n := range names {
			s.add(n, have)
		}
		return
	}
	s.base, s.in, s.out = have, in, out
}

// namedScratch holds the sets addAll puts a request's names in, kept
// with their room between requests (cleared).
var namedScratch = sync.Pool{New: func() any { return map[*encoded]struct{}{} }}

// del unsubscribes from n.
func (s *subscription) del(n string) {
	if s == nil {
		return
	}
	if e, ok := s.base[n]; ok {
		if s.out == nil {
			s.out = map[string]struct{}{}
		}
		s.out[e.name()] = struct{}{}
		return
	}
	delete(s.in, n)
	if len(s.in) == 0 {
		s.in = nil
	}
}

// each calls fn for every name, in no order.
func (s *subscription) each(fn func(string)) {
	if s == nil {
		return
	}
	for n := range s.in {
		fn(n)
	}
	for n := range s.base {
		if _, gone := s.out[n]; !gone {
			fn(n)
		}
	}
}

// equal says whether s and o name the same names.
func (s *subscription) equal(o *subscription) bool {
	if s.len() != o.len() {
		return false
	}
	same := true
	s.each(func(n string) {
		if same && !o.has(n) {
			same = false
		}
	})
	return same
}

// rebase re-expresses the subscription over base (a newer snapshot's
// resources of the type). It costs a pass over both maps, so it is made
// when the stream compares every resource anyway (a rebuilt snapshot),
// or in time proportional to the patch when base was derived from the
// current base (an endpoint, route or new-Service patch). A
// subscription to a few of many names (a proxyless gRPC client) keeps
// them as a plain set instead (base nil), as versionMap does.
func (s *subscription) rebase(base map[string]*encoded, d derivation, derived bool) {
	if sameMap(s.base, base) {
		return
	}
	if derived && s.base != nil && sameMap(s.base, d.from) {
		// derive replaces or adds the changed names and keeps the rest:
		// base is d.from with the changed names it lacked, exactly when
		// its length says so. Those are not subscribed unless in.
		var added []string
		for _, n := range d.changed {
			if _, ok := d.from[n]; !ok {
				added = append(added, n)
			}
		}
		if len(base) == len(d.from)+len(added) {
			for _, n := range added {
				if _, ok := s.in[n]; ok {
					delete(s.in, n)
					continue
				}
				if s.out == nil {
					s.out = map[string]struct{}{}
				}
				s.out[base[n].name()] = struct{}{}
			}
			s.base = base
			return
		}
	}
	held := s.len()
	if s.base == nil && 2*held < len(base) {
		return // plain, and stays so: most of base is not subscribed
	}
	missing := 0
	for n := range base {
		if !s.has(n) {
			missing++
		}
	}
	var in, out map[string]struct{}
	if missing > held {
		if s.base == nil {
			return
		}
		in = make(map[string]struct{}, held)
		s.each(func(n string) {
			if e, ok := base[n]; ok {
				n = e.name()
			}
			in[n] = struct{}{}
		})
		s.base, s.in, s.out = nil, in, nil
		return
	}
	for n, e := range base {
		if !s.has(n) {
			if out == nil {
				out = map[string]struct{}{}
			}
			out[e.name()] = struct{}{}
		}
	}
	s.each(func(n string) {
		if _, ok := base[n]; !ok {
			if in == nil {
				in = map[string]struct{}{}
			}
			in[n] = struct{}{}
		}
	})
	s.base, s.in, s.out = base, in, out
}

// newSubscription is the subscription to exactly names, expressed over
// base (nil: a plain set), for SotW requests, which name the whole
// subscription each time.
func newSubscription(names []string, base map[string]*encoded) *subscription {
	s := &subscription{}
	for _, n := range names {
		s.add(n, base)
	}
	s.rebase(base, derivation{}, false)
	return s
}
