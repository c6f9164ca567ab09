package envoy

import (
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	localrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netlocalrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	exprv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/rate_limit_descriptors/expr/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/translator/ir"
)

// Local rate limiting (RateLimitPolicy, docs/design/165): each sidecar of a
// target's pods keeps its own token buckets, in Envoy's local_ratelimit
// filter on the inbound chains of the target's ports, after RBAC (a
// request AuthPolicy denies takes no token).
//
// Every bucket is a descriptor of the filter, produced for a request by
// the filter's own rate_limits actions (Envoy 1.33+; the inbound route
// configuration stays untouched):
//
//	[weft_limit=workload]                    every request: spec.limit
//	[weft_limit=caller, weft_caller=<any>]   spec.callerLimit, one bucket per value
//	[weft_limit=rule:N]                      rule N's limit, when the request matches it
//	[weft_limit=rule:N:caller, weft_caller=<any>]
//
// weft_caller is the caller's SPIFFE ID (the peer certificate's URI SAN,
// through the CEL descriptor extension) on the mTLS chain, and the fixed
// value "plaintext" on the Permissive plaintext chain. An empty value in a
// configured descriptor is Envoy's wildcard: a bucket per distinct value
// (max_dynamic_descriptors of them, least recently used dropped).
//
// Envoy takes a token from every matched descriptor, the slowest-filling
// first, and refuses the request at the first empty one; the default
// bucket is taken only when no descriptor matched, which never happens
// (every request matches weft_limit=workload), so it is a formality with
// a 1s fill interval: Envoy requires every descriptor's interval to be a
// multiple of the default bucket's, and Second, Minute and Hour all are.
const (
	rlKey       = "weft_limit"
	rlCallerKey = "weft_caller"
	// RateLimitPlaintextCaller is weft_caller on a plaintext chain:
	// callers without mesh mTLS share one caller bucket.
	RateLimitPlaintextCaller = "plaintext"
	// rateLimitCallers bounds the caller buckets of each wildcard
	// descriptor (Envoy's default is 20).
	rateLimitCallers = 1000
	// callerExpr is the CEL expression of the caller's identity.
	callerExpr = "connection.uri_san_peer_certificate"
)

// inboundRateLimits are the RateLimitPolicies of the Services the proxy's
// workload serves that cover container port n, one per policy.
func (v *view) inboundRateLimits(n int32) []*ir.RateLimit {
	var out []*ir.RateLimit
	seen := map[ir.PolicyRef]bool{}
	for _, key := range v.served {
		svc := v.mesh.Service(key)
		if svc == nil {
			continue
		}
		for _, sp := range svc.Ports {
			if sp.RateLimit == nil || seen[sp.RateLimit.Source] {
				continue
			}
			for _, m := range servedPorts(sp, v.proxy) {
				if m == n {
					seen[sp.RateLimit.Source] = true
					out = append(out, sp.RateLimit)
					break
				}
			}
		}
	}
	return out
}

func rlStatPrefix(port int32, rl *ir.RateLimit) string {
	return fmt.Sprintf("inbound_%d_%s_%s", port, rl.Source.Namespace, rl.Source.Name)
}

// httpRateLimits are the local_ratelimit filters of an inbound HTTP
// chain on port n; mtls says whether the chain is the mTLS one.
func (v *view) httpRateLimits(n int32, mtls bool) []*hcmv3.HttpFilter {
	var out []*hcmv3.HttpFilter
	for _, rl := range v.inboundRateLimits(n) {
		out = append(out, &hcmv3.HttpFilter{
			Name:       "envoy.filters.http.local_ratelimit." + rl.Source.Namespace + "." + rl.Source.Name,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(localRateLimit(rlStatPrefix(n, rl), rl, mtls))},
		})
	}
	return out
}

// Envoy keeps an HTTP local_ratelimit filter's buckets per filter
// configuration, that is per filter chain (the HTTP filter has no
// share_key): in Permissive mode a port's mTLS and plaintext requests are
// counted in separate buckets of the same size. docs/api.md says so.

// networkRateLimits are the connection limits of an inbound TCP chain:
// spec.limit counts new connections. Envoy's network filter has no shadow
// mode, so a DryRun policy adds none (docs/api.md says so).
func (v *view) networkRateLimits(n int32) []*listenerv3.Filter {
	var out []*listenerv3.Filter
	for _, rl := range v.inboundRateLimits(n) {
		if rl.DryRun {
			continue
		}
		out = append(out, &listenerv3.Filter{
			Name: "envoy.filters.network.local_ratelimit." + rl.Source.Namespace + "." + rl.Source.Name,
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&netlocalrlv3.LocalRateLimit{
				StatPrefix:  rlStatPrefix(n, rl),
				TokenBucket: tokenBucket(rl.Limit),
				// Each filter chain would have its own bucket otherwise:
				// the port's mTLS, plaintext and TLS chains share one.
				ShareKey: rlStatPrefix(n, rl),
			})},
		})
	}
	return out
}

func tokenBucket(b ir.Bucket) *typev3.TokenBucket {
	return &typev3.TokenBucket{
		MaxTokens:     b.Burst,
		TokensPerFill: wrapperspb.UInt32(b.Requests),
		FillInterval:  durationpb.New(b.Interval.D()),
	}
}

func percent(n uint32) *corev3.RuntimeFractionalPercent {
	return &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}}
}

func localRateLimit(statPrefix string, rl *ir.RateLimit, mtls bool) *localrlv3.LocalRateLimit {
	c := &localrlv3.LocalRateLimit{
		StatPrefix: statPrefix,
		Status:     &typev3.HttpStatus{Code: typev3.StatusCode(rl.StatusCode)},
		// The default bucket: never taken from (see above).
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     ^uint32(0),
			TokensPerFill: wrapperspb.UInt32(^uint32(0)),
			FillInterval:  durationpb.New(1e9),
		},
		AlwaysConsumeDefaultTokenBucket: wrapperspb.Bool(false),
		FilterEnabled:                   percent(100),
		FilterEnforced:                  percent(100),
		// gRPC's code for "try again later"; UNAVAILABLE would be retried
		// at once by callers' retry policies.
		RateLimitedAsResourceExhausted: true,
		MaxDynamicDescriptors:          wrapperspb.UInt32(rateLimitCallers),
	}
	if rl.DryRun {
		c.FilterEnforced = percent(0)
	}
	if rl.Headers {
		c.EnableXRatelimitHeaders = ratelimitv3.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
		// Retry-After (RFC 9110), the header clients and libraries
		// honour: the seconds until the rejecting bucket's next token,
		// at least 1. Envoy adds it to HTTP 429 answers only (not to
		// another status code, nor to a gRPC call's RESOURCE_EXHAUSTED).
		c.EnableRetryAfterHeader = true
	}
	add := func(b *ir.Bucket, entries []*ratelimitv3.RateLimitDescriptor_Entry, actions ...[]*routev3.RateLimit_Action) {
		if b == nil {
			return
		}
		c.Descriptors = append(c.Descriptors, &ratelimitv3.LocalRateLimitDescriptor{Entries: entries, TokenBucket: tokenBucket(*b)})
		for _, a := range actions {
			c.RateLimits = append(c.RateLimits, &routev3.RateLimit{Actions: a})
		}
	}
	entry := func(k, v string) *ratelimitv3.RateLimitDescriptor_Entry {
		return &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: v}
	}
	caller := callerAction(mtls)
	add(&rl.Limit, []*ratelimitv3.RateLimitDescriptor_Entry{entry(rlKey, "workload")}, []*routev3.RateLimit_Action{genericKey(rlKey, "workload")})
	add(rl.CallerLimit, []*ratelimitv3.RateLimitDescriptor_Entry{entry(rlKey, "caller"), entry(rlCallerKey, "")}, []*routev3.RateLimit_Action{genericKey(rlKey, "caller"), caller})
	for _, r := range rl.Rules {
		shared, perCaller := "rule:"+r.Name, "rule:"+r.Name+":caller"
		var sharedActions, callerActions [][]*routev3.RateLimit_Action
		matchers := ruleMatchers(r)
		for _, hs := range matchers {
			sharedActions = append(sharedActions, []*routev3.RateLimit_Action{headerValueMatch(shared, hs)})
			callerActions = append(callerActions, []*routev3.RateLimit_Action{headerValueMatch(perCaller, hs), caller})
		}
		if matchers == nil { // a rule on every path ("/") and method
			sharedActions = [][]*routev3.RateLimit_Action{{genericKey(rlKey, shared)}}
			callerActions = [][]*routev3.RateLimit_Action{{genericKey(rlKey, perCaller), caller}}
		}
		add(r.Limit, []*ratelimitv3.RateLimitDescriptor_Entry{entry(rlKey, shared)}, sharedActions...)
		add(r.CallerLimit, []*ratelimitv3.RateLimitDescriptor_Entry{entry(rlKey, perCaller), entry(rlCallerKey, "")}, callerActions...)
	}
	return c
}

func genericKey(k, v string) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_GenericKey_{GenericKey: &routev3.RateLimit_Action_GenericKey{DescriptorKey: k, DescriptorValue: v}}}
}

func callerAction(mtls bool) *routev3.RateLimit_Action {
	if !mtls {
		return genericKey(rlCallerKey, RateLimitPlaintextCaller)
	}
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_Extension{Extension: &corev3.TypedExtensionConfig{
		Name:        "envoy.rate_limit_descriptors.expr",
		TypedConfig: mustAny(&exprv3.Descriptor{DescriptorKey: rlCallerKey, ExprSpecifier: &exprv3.Descriptor_Text{Text: callerExpr}}),
	}}}
}

func headerValueMatch(value string, hs []*routev3.HeaderMatcher) *routev3.RateLimit_Action {
	return &routev3.RateLimit_Action{ActionSpecifier: &routev3.RateLimit_Action_HeaderValueMatch_{HeaderValueMatch: &routev3.RateLimit_Action_HeaderValueMatch{
		DescriptorKey: rlKey, DescriptorValue: value, ExpectMatch: wrapperspb.Bool(true), Headers: hs,
	}}}
}

// ruleMatchers are a rule's alternatives, each a list of header matchers
// that must all hold: one per way its paths can appear in :path (which
// carries the query string), each with the methods. The translator made
// the paths disjoint, so a request matches at most one alternative.
func ruleMatchers(r ir.RateLimitRule) [][]*routev3.HeaderMatcher {
	var method *routev3.HeaderMatcher
	switch len(r.Methods) {
	case 0:
	case 1:
		method = headerString(":method", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: r.Methods[0]}})
	default:
		method = headerString(":method", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "^(" + strings.Join(r.Methods, "|") + ")$"}}})
	}
	var paths []*matcherv3.StringMatcher
	exact := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
	}
	prefix := func(s string) *matcherv3.StringMatcher {
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
	}
	for _, p := range r.PathsExact {
		paths = append(paths, exact(p), prefix(p+"?"))
	}
	for _, p := range r.PathsPrefix {
		paths = append(paths, exact(p), prefix(p+"/"), prefix(p+"?"))
	}
	if len(paths) == 0 {
		if method == nil {
			return nil // every request: see localRateLimit
		}
		return [][]*routev3.HeaderMatcher{{method}}
	}
	var out [][]*routev3.HeaderMatcher
	for _, p := range paths {
		hs := []*routev3.HeaderMatcher{headerString(":path", p)}
		if method != nil {
			hs = append(hs, method)
		}
		out = append(out, hs)
	}
	return out
}

func headerString(name string, m *matcherv3.StringMatcher) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}
}
