package sim

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Access logs, as Envoy writes them (docs/design/170 cites the sources).
//
// Each HTTP connection manager and tcp_proxy the walk passes writes its
// access_log entries when its stream ends: the server's sidecar first,
// then the caller's. A line is rendered from the entry's
// SubstitutionFormatString and what the walk knows of the stream (its
// "stream info"):
//
//   - dynamic metadata: the HTTP RBAC filter writes, in namespace
//     envoy.filters.http.rbac, <shadow_rules_stat_prefix>shadow_engine_result
//     ("allowed"/"denied") and <...>shadow_effective_policy_id (only when a
//     shadow policy matched) when it has shadow rules, and
//     <rules_stat_prefix>enforced_engine_result and <...>enforced_effective_policy_id
//     (only when a policy matched) when it has rules
//     (RoleBasedAccessControlFilter::decodeHeaders in
//     source/extensions/filters/http/rbac/rbac_filter.cc). Two RBAC filters
//     in one chain write into the one namespace; StreamInfoImpl::setDynamicMetadata
//     merges (MergeFrom), so a later filter's key replaces an earlier one's.
//     The network RBAC filter writes only the shadow keys, in
//     envoy.filters.network.rbac (source/extensions/filters/network/rbac/rbac_filter.cc).
//   - an enforced denial: the HTTP filter's local reply carries
//     RESPONSE_CODE_DETAILS rbac_access_denied_matched_policy[<id or none>];
//     the network filter sets CONNECTION_TERMINATION_DETAILS to the same
//     (Filters::Common::RBAC::responseDetail).
//   - RESPONSE_CODE_DETAILS otherwise: via_upstream for a response from
//     upstream, route_not_found, cluster_not_found, no_healthy_upstream for
//     Envoy's own answers (StreamInfo::ResponseCodeDetails); RESPONSE_FLAGS
//     NR, NC, UH, UF (StreamInfo::ResponseFlag short names).
//   - a delivered request is answered 200 by the simulated application;
//     bytes and durations are 0 and START_TIME is fixed, so lines are
//     deterministic.
//
// A command operator the walk does not know makes the line an error
// (AccessLogLine.Err): Envoy refuses an unknown operator when it loads the
// configuration, and a test should notice either way.

// AccessLogLine is one access log entry a sidecar wrote for the walk.
type AccessLogLine struct {
	// Pod is the sidecar's pod; Filter names the writer
	// ("http_connection_manager <stat_prefix>" or "tcp_proxy <stat_prefix>").
	Pod, Filter string
	// Line is the rendered entry: the text format's string, or the JSON
	// format's object.
	Line string
	// Fields is the JSON format's object (nil for text): each key's value,
	// nil where the operator had no value (Envoy writes null).
	Fields map[string]any
	// Err says why the entry cannot be rendered.
	Err string
}

// Field returns a JSON field as text: "" for a missing key or null.
func (l AccessLogLine) Field(k string) string {
	switch v := l.Fields[k].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

// streamInfo is what the walk knows of one HTTP stream or TCP connection.
type streamInfo struct {
	meta                     map[string]map[string]string
	codeDetails, termDetails string
	flags                    string
	cluster                  string
	host                     netip.AddrPort
	peerURI                  string
	req                      *Request
	proto                    Protocol
	http                     bool
}

func newStreamInfo(ds downstream, http bool) *streamInfo {
	si := &streamInfo{meta: map[string]map[string]string{}, http: http}
	if len(ds.peerURIs) > 0 {
		si.peerURI = ds.peerURIs[0]
	}
	return si
}

func (si *streamInfo) setMeta(ns, key, val string) {
	if si == nil {
		return
	}
	if si.meta[ns] == nil {
		si.meta[ns] = map[string]string{}
	}
	si.meta[ns][key] = val
}

// setFlag records Envoy's own answer at this hop (the first one counts).
func (si *streamInfo) setFlag(flag, details string) {
	if si == nil || si.flags != "" {
		return
	}
	si.flags, si.codeDetails = flag, details
}

func engineResult(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "denied"
}

// writeLogs renders a filter's access_log entries for a finished stream.
func (k *walker) writeLogs(p *Pod, filter string, logs []*accesslogv3.AccessLog, si *streamInfo, v Verdict) {
	if len(logs) == 0 {
		return
	}
	code := 0
	details, flags := si.codeDetails, si.flags
	if si.http {
		code = v.Status
		switch v.Kind {
		case Delivered, PassthroughPlaintext:
			if code == 0 {
				code = 200
			}
			if details == "" {
				details = "via_upstream"
			}
		case TLSFailure, Reset, Refused, Loop:
			if flags == "" && si.cluster != "" {
				code, flags, details = 503, "UF", "upstream_reset_before_response_started{connection_failure}"
			}
		default:
			// A status that came from upstream (a server sidecar's 403)
			// is proxied as it is.
			if details == "" && code != 0 && si.cluster != "" {
				details = "via_upstream"
			}
		}
	}
	for _, l := range logs {
		line := AccessLogLine{Pod: p.Key(), Filter: filter}
		cfg := &streamv3.StdoutAccessLog{}
		if err := l.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			line.Err = fmt.Sprintf("access log %q: only envoy.access_loggers.stdout is simulated: %v", l.GetName(), err)
			k.accessLog = append(k.accessLog, line)
			continue
		}
		f := cfg.GetLogFormat()
		r := renderer{si: si, code: code, details: details, flags: flags}
		switch {
		case f.GetJsonFormat() != nil:
			line.Fields = map[string]any{}
			for key, val := range f.GetJsonFormat().GetFields() {
				line.Fields[key] = r.jsonValue(val)
			}
			b, _ := json.Marshal(line.Fields) // map keys sorted: Envoy sorts properties too
			line.Line = string(b)
		case f.GetTextFormatSource() != nil:
			line.Line = r.text(f.GetTextFormatSource().GetInlineString())
		case f.GetTextFormat() != "":
			line.Line = r.text(f.GetTextFormat())
		default:
			r.err = "no format (Envoy's default format is not simulated)"
		}
		line.Err = r.err
		k.logf("%s envoy: %s access log: %s", p.Key(), filter, strings.TrimRight(line.Line, "\n"))
		k.accessLog = append(k.accessLog, line)
	}
}

type renderer struct {
	si      *streamInfo
	code    int
	details string
	flags   string
	err     string
}

// jsonValue renders one value of a format dictionary: a string that is a
// single command operator becomes that operator's typed value (null when
// it has none, a number for codes, bytes and durations); any other string
// is text with "-" for missing values; nested structs recurse.
func (r *renderer) jsonValue(v *structpb.Value) any {
	switch x := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		out := map[string]any{}
		for k, vv := range x.StructValue.GetFields() {
			out[k] = r.jsonValue(vv)
		}
		return out
	case *structpb.Value_StringValue:
		s := x.StringValue
		if ops := operators(s); len(ops) == 1 && ops[0] == s {
			val, ok, num := r.op(s)
			if !ok {
				return nil
			}
			if num {
				if n, err := strconv.Atoi(val); err == nil {
					return n
				}
			}
			return val
		}
		return r.text(s)
	default:
		return v.AsInterface()
	}
}

// operators lists the %...% command operators of a format string.
func operators(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			return out
		}
		out = append(out, s[i:i+j+2])
		s = s[i+j+2:]
	}
}

// text renders a format string: each operator replaced by its value, "-"
// where it has none.
func (r *renderer) text(s string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '%')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.IndexByte(s[i+1:], '%')
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		val, ok, _ := r.op(s[i : i+j+2])
		if !ok || val == "" {
			val = "-"
		}
		b.WriteString(val)
		s = s[i+j+2:]
	}
}

// op evaluates one command operator ("%NAME(args):len%"): its value,
// whether it has one, and whether it is a number.
func (r *renderer) op(tok string) (string, bool, bool) {
	body := strings.TrimSuffix(strings.TrimPrefix(tok, "%"), "%")
	name, arg := body, ""
	if i := strings.IndexByte(body, '('); i >= 0 {
		j := strings.LastIndexByte(body, ')')
		if j < i {
			r.fail(tok)
			return "", false, false
		}
		name, arg = body[:i], body[i+1:j]
	}
	si := r.si
	str := func(s string) (string, bool, bool) { return s, s != "", false }
	switch name {
	case "START_TIME":
		return "2026-01-01T00:00:00.000Z", true, false
	case "REQ", "REQUEST_HEADER":
		if !si.http {
			return "", false, false
		}
		for _, h := range strings.Split(arg, "?") {
			if v, ok := si.req.get(h); ok {
				return v, true, false
			}
		}
		return "", false, false
	case "PROTOCOL":
		switch {
		case !si.http:
			return "", false, false
		case si.proto == H2C || si.proto == GRPC:
			return "HTTP/2", true, false
		}
		return "HTTP/1.1", true, false
	case "RESPONSE_CODE":
		return strconv.Itoa(r.code), true, true
	case "RESPONSE_FLAGS":
		return str(r.flags)
	case "RESPONSE_CODE_DETAILS":
		return str(r.details)
	case "CONNECTION_TERMINATION_DETAILS":
		return str(si.termDetails)
	case "BYTES_RECEIVED", "BYTES_SENT", "DURATION":
		return "0", true, true
	case "UPSTREAM_HOST":
		if !si.host.IsValid() {
			return "", false, false
		}
		return si.host.String(), true, false
	case "UPSTREAM_CLUSTER":
		return str(si.cluster)
	case "DOWNSTREAM_PEER_URI_SAN":
		return str(si.peerURI)
	case "DYNAMIC_METADATA":
		parts := strings.Split(arg, ":")
		if len(parts) != 2 {
			r.fail(tok) // nested keys are not simulated
			return "", false, false
		}
		v, ok := si.meta[parts[0]][parts[1]]
		return v, ok, false
	}
	r.fail(tok)
	return "", false, false
}

func (r *renderer) fail(tok string) {
	if r.err == "" {
		r.err = fmt.Sprintf("command operator %s is not simulated (or not Envoy's)", tok)
	}
}

// TextFields splits a rendered text line's key=value words (values
// without spaces), for tests of the text format.
func TextFields(line string) map[string]string {
	out := map[string]string{}
	for _, w := range strings.Fields(line) {
		if k, v, ok := strings.Cut(w, "="); ok {
			out[k] = v
		}
	}
	return out
}

// closedBeforeProxy writes the access log of the tcp_proxy that follows a
// network RBAC filter which closed the connection: every read filter's
// onNewConnection runs when the connection is accepted (the RBAC filter's
// returns Continue), so tcp_proxy has chosen its cluster before the RBAC
// filter reads the first bytes and denies, and it logs the connection
// when it closes: TcpProxy::Filter::~Filter flushes the TcpConnectionEnd
// access log (source/common/tcp_proxy/tcp_proxy.cc).
func (k *walker) closedBeforeProxy(p *Pod, rest []*listenerv3.Filter, v Verdict) {
	for _, f := range rest {
		if typeOf(f.GetTypedConfig()) != typeTCPProxy {
			continue
		}
		cfg := &tcpproxyv3.TcpProxy{}
		if err := f.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			return
		}
		name, best := cfg.GetCluster(), uint32(0)
		for _, cw := range cfg.GetWeightedClusters().GetClusters() {
			if cw.GetWeight() > best {
				name, best = cw.GetName(), cw.GetWeight()
			}
		}
		k.si.cluster = name
		k.writeLogs(p, "tcp_proxy "+cfg.GetStatPrefix(), cfg.GetAccessLog(), k.si, v)
		return
	}
}
