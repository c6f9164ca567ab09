package sim

import (
	"fmt"
	"sort"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	netlocalrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	exprv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
)

// Local rate limiting as Envoy documents and implements it
// (envoy.filters.http.local_ratelimit and envoy.filters.network.local_ratelimit;
// source/extensions/filters/common/local_ratelimit/local_ratelimit_impl.cc
// and dynamic_descriptor.cc, Envoy 1.36-1.40).
const (
	typeHTTPLocalRateLimit = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
	typeNetLocalRateLimit  = "envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"
	typeExprDescriptor     = "envoy.extensions.rate_limit_descriptors.expr.v3.Descriptor"
)

// RateLimit is one local rate limit filter a call passed, with the
// buckets it takes a token from, as Envoy would apply them.
type RateLimit struct {
	// Pod is the sidecar ("namespace/name") and Filter the filter's name.
	Pod, Filter, StatPrefix string
	// Connections: a network filter, which counts new connections and
	// closes one that finds its bucket empty. ShareKey: its bucket is
	// shared with every network filter of the same share_key and token
	// bucket (otherwise each filter chain has its own; so has every HTTP
	// filter, which has no share_key).
	Connections bool
	ShareKey    string
	// Enabled and Enforced are filter_enabled and filter_enforced's
	// default percentages (Envoy: 0 when unset). Enabled but not enforced
	// only counts (the rate_limited statistic) and lets the request pass.
	Enabled, Enforced uint32
	// Buckets: every bucket the request takes a token from, in the order
	// Envoy takes them (matched descriptors by fill rate, slowest first;
	// then the default bucket when no descriptor matched or
	// always_consume_default_token_bucket holds). The first empty one
	// refuses the request.
	Buckets []Bucket
	// Status answers a limited HTTP request (429 unless the filter says a
	// code of 400 or more); a limited gRPC call gets HTTP 200 with
	// grpc-status GRPCStatus.
	Status     int
	GRPCStatus int
	// Headers: X-RateLimit-Limit, -Remaining and -Reset on responses
	// (enable_x_ratelimit_headers DRAFT_VERSION_03).
	Headers bool
	// RetryAfter: the limited response carries Retry-After
	// (enable_retry_after_header: on an enforced HTTP 429 only, "the
	// number of seconds until the next token is available in the bucket
	// that rejected the request, clamped to at least 1", local_rate_limit
	// .proto, Envoy 1.40). The walk does not model time, so this is the
	// most it can say: the rejecting bucket's fill interval, within which
	// its next token comes. 0: no Retry-After.
	RetryAfter time.Duration
	// Limited: Call.EmptyBuckets was set and the filter counted the
	// request (or connection) as over its limit.
	Limited bool
}

// Bucket is one token bucket.
type Bucket struct {
	// Descriptor is the request's descriptor that matched, entries
	// "key=value" joined by ", ", or "default" for the filter's default
	// bucket.
	Descriptor string
	// PerValue: the configured descriptor has a wildcard (empty) value,
	// so each distinct value has its own bucket (Descriptor names this
	// request's).
	PerValue                 bool
	MaxTokens, TokensPerFill uint32
	FillInterval             time.Duration
}

func (b Bucket) String() string {
	s := fmt.Sprintf("%s: %d per %s, burst %d", b.Descriptor, b.TokensPerFill, b.FillInterval, b.MaxTokens)
	if b.PerValue {
		s += " (a bucket per value)"
	}
	return s
}

func (r RateLimit) String() string {
	var bs []string
	for _, b := range r.Buckets {
		bs = append(bs, b.String())
	}
	mode := "enforced"
	switch {
	case r.Enabled == 0:
		mode = "disabled"
	case r.Enforced == 0:
		mode = "counting only"
	case r.Enforced < 100 || r.Enabled < 100:
		mode = fmt.Sprintf("enabled for %d%%, enforced for %d%% of those", r.Enabled, r.Enforced)
	}
	what := "requests"
	if r.Connections {
		what = "connections"
	}
	return fmt.Sprintf("local rate limit %q (%s, %s): %s", r.StatPrefix, what, mode, strings.Join(bs, "; "))
}

func percentOf(p *corev3.RuntimeFractionalPercent) uint32 {
	if p == nil || p.GetDefaultValue() == nil {
		return 0
	}
	d := p.GetDefaultValue()
	switch d.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		return d.GetNumerator() / 100
	case typev3.FractionalPercent_MILLION:
		return d.GetNumerator() / 10000
	}
	return min(d.GetNumerator(), 100)
}

func bucketOf(desc string, tb *typev3.TokenBucket, defaultInterval time.Duration) Bucket {
	b := Bucket{Descriptor: desc, MaxTokens: tb.GetMaxTokens(), TokensPerFill: 1, FillInterval: defaultInterval}
	if tb.GetTokensPerFill() != nil {
		b.TokensPerFill = tb.GetTokensPerFill().GetValue()
	}
	if tb.GetFillInterval() != nil {
		b.FillInterval = tb.GetFillInterval().AsDuration()
	}
	return b
}

type entry struct{ key, value string }

// descriptors produces a request's descriptors from rate_limits actions:
// a RateLimit yields one descriptor when every action yields its entry
// (RateLimitPolicy::populateDescriptors in source/common/router/
// router_ratelimit.cc). ok is false for an action the walk does not
// simulate (named in why).
func (k *walker) descriptors(rls []*routev3.RateLimit, ds downstream, req *Request) (out [][]entry, why string) {
	for _, rl := range rls {
		var d []entry
		produced := true
		for _, a := range rl.GetActions() {
			switch s := a.GetActionSpecifier().(type) {
			case *routev3.RateLimit_Action_GenericKey_:
				key := s.GenericKey.GetDescriptorKey()
				if key == "" {
					key = "generic_key"
				}
				d = append(d, entry{key, s.GenericKey.GetDescriptorValue()})
			case *routev3.RateLimit_Action_HeaderValueMatch_:
				m := s.HeaderValueMatch
				all := true
				for _, h := range m.GetHeaders() {
					all = all && MatchHeader(h, req)
				}
				expect := m.GetExpectMatch() == nil || m.GetExpectMatch().GetValue()
				if all != expect {
					produced = false
					break
				}
				key := m.GetDescriptorKey()
				if key == "" {
					key = "header_match"
				}
				d = append(d, entry{key, m.GetDescriptorValue()})
			case *routev3.RateLimit_Action_Extension:
				cfg := &exprv3.Descriptor{}
				if typeOf(s.Extension.GetTypedConfig()) != typeExprDescriptor || s.Extension.GetTypedConfig().UnmarshalTo(cfg) != nil {
					return nil, fmt.Sprintf("descriptor extension %q is not simulated", s.Extension.GetName())
				}
				if cfg.GetText() != "connection.uri_san_peer_certificate" {
					return nil, fmt.Sprintf("CEL descriptor %q is not simulated", cfg.GetText())
				}
				// The first URI SAN of the peer certificate; without one
				// the expression fails and the descriptor is not produced
				// (skip_if_error or not: no rate limit from it).
				if len(ds.peerURIs) == 0 {
					produced = false
					break
				}
				d = append(d, entry{cfg.GetDescriptorKey(), ds.peerURIs[0]})
			default:
				return nil, fmt.Sprintf("rate limit action %T is not simulated", s)
			}
			if !produced {
				break
			}
		}
		if produced && len(d) > 0 {
			out = append(out, d)
		}
	}
	return out, ""
}

// matches: sizes and keys equal in order, values equal or the configured
// one empty (a wildcard: DynamicDescriptorMap::matchDescriptorEntries).
func matches(req []entry, cfg []*ratelimitv3.RateLimitDescriptor_Entry) (ok, wildcard bool) {
	if len(req) != len(cfg) {
		return false, false
	}
	for i, e := range cfg {
		if e.GetKey() != req[i].key {
			return false, false
		}
		if e.GetValue() == "" {
			wildcard = true
			continue
		}
		if e.GetValue() != req[i].value {
			return false, false
		}
	}
	return true, wildcard
}

func describeEntries(d []entry) string {
	var s []string
	for _, e := range d {
		s = append(s, e.key+"="+e.value)
	}
	return strings.Join(s, ", ")
}

// httpLocalRateLimit applies an HTTP local_ratelimit filter
// (LocalRateLimiterImpl::requestAllowed). ok is false when it ends the
// request (limited and enforced).
func (k *walker) httpLocalRateLimit(p *Pod, name string, cfg *localrlv3.LocalRateLimit, ds downstream, req *Request) (Verdict, bool) {
	r := RateLimit{Pod: p.Key(), Filter: name, StatPrefix: cfg.GetStatPrefix(),
		Enabled: percentOf(cfg.GetFilterEnabled()), Enforced: percentOf(cfg.GetFilterEnforced()),
		Status: 429, GRPCStatus: 14, Headers: cfg.GetEnableXRatelimitHeaders() == ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03}
	if c := int(cfg.GetStatus().GetCode()); c >= 400 {
		r.Status = c
	}
	if cfg.GetRateLimitedAsResourceExhausted() {
		r.GRPCStatus = 8
	}
	interval := cfg.GetTokenBucket().GetFillInterval().AsDuration()
	// Descriptors come from the filter's rate_limits when it has them;
	// otherwise from the route's (not used by weft, not simulated).
	reqDescs, why := k.descriptors(cfg.GetRateLimits(), ds, req)
	if why != "" {
		return Verdict{Kind: Invalid, Reason: fmt.Sprintf("%s: local rate limit %q: %s", p.Key(), name, why)}, false
	}
	for _, d := range reqDescs {
		for _, c := range cfg.GetDescriptors() {
			if ok, wild := matches(d, c.GetEntries()); ok {
				b := bucketOf(describeEntries(d), c.GetTokenBucket(), interval)
				b.PerValue = wild
				r.Buckets = append(r.Buckets, b)
				break
			}
		}
	}
	rate := func(b Bucket) float64 { return float64(b.TokensPerFill) / b.FillInterval.Seconds() }
	sort.SliceStable(r.Buckets, func(i, j int) bool { return rate(r.Buckets[i]) < rate(r.Buckets[j]) })
	always := cfg.GetAlwaysConsumeDefaultTokenBucket() == nil || cfg.GetAlwaysConsumeDefaultTokenBucket().GetValue()
	if len(r.Buckets) == 0 || always {
		r.Buckets = append(r.Buckets, bucketOf("default", cfg.GetTokenBucket(), interval))
	}
	if r.Enabled == 0 {
		r.Buckets = nil // a disabled filter takes no token
	}
	r.Limited = k.emptyBuckets && r.Enabled > 0
	k.rateLimits = append(k.rateLimits, r)
	k.logf("%s envoy: %s", p.Key(), r)
	if !r.Limited {
		return Verdict{}, true
	}
	if r.Enforced == 0 {
		k.logf("%s envoy: local rate limit %q: over the limit, counted (rate_limited) and let through: not enforced", p.Key(), r.StatPrefix)
		return Verdict{}, true
	}
	// The local reply's access log: flag RL, details local_rate_limited
	// (LocalRateLimit::Filter::decodeHeaders).
	k.si.setFlag("RL", "local_rate_limited")
	v := Verdict{Kind: RateLimited, Status: r.Status, Policy: name,
		Reason: fmt.Sprintf("%s: local rate limit %q: bucket %s is empty: HTTP %d", p.Key(), r.StatPrefix, r.Buckets[0].Descriptor, r.Status)}
	grpc := false
	if ct, _ := req.get("content-type"); strings.HasPrefix(ct, "application/grpc") {
		grpc = true
		v.Status = 200
		v.Reason = fmt.Sprintf("%s: local rate limit %q: bucket %s is empty: grpc-status %d", p.Key(), r.StatPrefix, r.Buckets[0].Descriptor, r.GRPCStatus)
	}
	if cfg.GetEnableRetryAfterHeader() && r.Status == 429 && !grpc {
		r.RetryAfter = max(r.Buckets[0].FillInterval, time.Second)
		k.rateLimits[len(k.rateLimits)-1] = r
		k.logf("%s envoy: local rate limit %q: Retry-After: the seconds until bucket %s's next token, at most %s", p.Key(), r.StatPrefix, r.Buckets[0].Descriptor, r.RetryAfter)
	}
	return v, false
}

// netLocalRateLimit applies a network local_ratelimit filter: each new
// connection takes a token; one that finds none is closed at once. It has
// no shadow mode (runtime_enabled turns it off entirely).
func (k *walker) netLocalRateLimit(p *Pod, name string, cfg *netlocalrlv3.LocalRateLimit) (Verdict, bool) {
	r := RateLimit{Pod: p.Key(), Filter: name, StatPrefix: cfg.GetStatPrefix(), Connections: true, ShareKey: cfg.GetShareKey(), Enabled: 100, Enforced: 100}
	if re := cfg.GetRuntimeEnabled(); re != nil && !re.GetDefaultValue().GetValue() {
		r.Enabled, r.Enforced = 0, 0
	} else {
		r.Buckets = []Bucket{bucketOf("connections", cfg.GetTokenBucket(), 0)}
	}
	r.Limited = k.emptyBuckets && r.Enabled > 0
	k.rateLimits = append(k.rateLimits, r)
	k.logf("%s envoy: %s", p.Key(), r)
	if !r.Limited {
		return Verdict{}, true
	}
	return Verdict{Kind: Reset, Policy: name, Reason: fmt.Sprintf("%s: local rate limit %q: no token for a new connection: closed", p.Key(), r.StatPrefix)}, false
}
