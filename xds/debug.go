package xds

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// DebugHandler serves, for operators (bound to localhost by default):
//
//	GET /debug/proxies                  every connected stream (id, stream
//	                                    number, ...) and, per type, SYNCED,
//	                                    STALE or NACKED (like istioctl
//	                                    proxy-status)
//	GET /debug/config_dump?proxy=ID     the configuration last built for that
//	    [&stream=N]                     proxy, per type; secrets by name only.
//	                                    Streams may share a node id (a pod's
//	                                    proxyless application and its weft
//	                                    agent): when they are served
//	                                    different configurations, name one
//	                                    with the stream number that
//	                                    /debug/proxies shows (409 otherwise,
//	                                    listing them)
func (a *ADS) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/proxies", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.Proxies())
	})
	mux.HandleFunc("GET /debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("proxy")
		if id == "" {
			http.Error(w, "name the proxy: /debug/config_dump?proxy=<node id>[&stream=<number>] (see /debug/proxies)", http.StatusBadRequest)
			return
		}
		var stream uint64
		if s := r.URL.Query().Get("stream"); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil || n == 0 {
				http.Error(w, fmt.Sprintf("stream=%q is not a stream number: use the \"stream\" of a proxy in /debug/proxies", s), http.StatusBadRequest)
				return
			}
			stream = n
		}
		c, streams := a.debugConn(id, stream)
		switch {
		case c != nil:
			writeJSON(w, configDump(c.group.snap.Load(), c.own))
		case len(streams) > 0:
			http.Error(w, fmt.Sprintf("proxy %s has %d streams with different configurations (%s): add &stream=<number> (see /debug/proxies)",
				id, len(streams), strings.Join(streams, "; ")), http.StatusConflict)
		case stream != 0:
			http.Error(w, fmt.Sprintf("no connected stream %d of proxy %s (see /debug/proxies)", stream, id), http.StatusNotFound)
		default:
			http.Error(w, "no connected proxy "+id+" (see /debug/proxies)", http.StatusNotFound)
		}
	})
	return mux
}

// debugConn finds the stream of proxy id to dump: the one numbered stream
// when stream is not 0, else any of the id's streams if they all share a
// group (and so a configuration). When they do not, it returns no stream
// and a description of each, for the operator to choose.
func (a *ADS) debugConn(id string, stream uint64) (*conn, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var matches []*conn
	for c := range a.conns {
		if c.node.ID == id && (stream == 0 || c.id == stream) {
			matches = append(matches, c)
		}
	}
	if len(matches) == 0 {
		return nil, nil
	}
	for _, c := range matches[1:] {
		if c.group != matches[0].group {
			sort.Slice(matches, func(i, j int) bool { return matches[i].id < matches[j].id })
			desc := make([]string, len(matches))
			for i, c := range matches {
				desc[i] = fmt.Sprintf("stream %d: %s, auth %s", c.id, kindName(c.node.Proxy.Kind), c.node.Auth)
			}
			return nil, desc
		}
	}
	return matches[0], nil
}

// configDump is a stream's newest configuration: its group's, with the
// stream's own listeners (conn.own), type → resources as JSON, sorted by
// name. Secret contents are never shown: their names and versions only.
func configDump(snap *snapshot, own []*encoded) map[string][]json.RawMessage {
	out := map[string][]json.RawMessage{}
	if snap == nil {
		return out
	}
	for _, t := range pushOrder {
		res := snap.sorted(t, nil)
		if t == resourcev3.ListenerType && len(own) > 0 {
			res = append(res, own...)
			sort.Slice(res, func(i, j int) bool { return res[i].name() < res[j].name() })
		}
		for _, e := range res {
			var b []byte
			if t == resourcev3.SecretType {
				b, _ = json.Marshal(map[string]string{"name": e.name(), "version": e.version(), "content": "REDACTED"})
			} else {
				var err error
				if b, err = protojson.Marshal(e.newAny(t)); err != nil {
					b, _ = json.Marshal(map[string]string{"name": e.name(), "error": err.Error()})
				}
			}
			out[shortType(t)] = append(out[shortType(t)], b)
		}
	}
	return out
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
