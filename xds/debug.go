package xds

import (
	"encoding/json"
	"net/http"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// DebugHandler serves, for operators (bound to localhost by default):
//
//	GET /debug/proxies                  every connected proxy and, per type,
//	                                    SYNCED, STALE or NACKED (like
//	                                    istioctl proxy-status)
//	GET /debug/config_dump?proxy=ID     the configuration last built for that
//	                                    proxy, per type; secrets by name only
func (a *ADS) DebugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/proxies", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, a.Proxies())
	})
	mux.HandleFunc("GET /debug/config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("proxy")
		if id == "" {
			http.Error(w, "name the proxy: /debug/config_dump?proxy=<node id> (see /debug/proxies)", http.StatusBadRequest)
			return
		}
		dump, ok := a.configDump(id)
		if !ok {
			http.Error(w, "no connected proxy "+id+" (see /debug/proxies)", http.StatusNotFound)
			return
		}
		writeJSON(w, dump)
	})
	return mux
}

// configDump is the newest configuration of proxy id's group: type →
// resources as JSON. Secret contents are never shown: their names and
// versions only.
func (a *ADS) configDump(id string) (map[string][]json.RawMessage, bool) {
	a.mu.Lock()
	var c *conn
	for cc := range a.conns {
		if cc.node.ID == id {
			c = cc
			break
		}
	}
	a.mu.Unlock()
	if c == nil {
		return nil, false
	}
	out := map[string][]json.RawMessage{}
	snap := c.group.snap.Load()
	if snap == nil {
		return out, true
	}
	for _, t := range pushOrder {
		for _, e := range snap.sorted(t, nil) {
			var b []byte
			if t == resourcev3.SecretType {
				b, _ = json.Marshal(map[string]string{"name": e.name, "version": e.version, "content": "REDACTED"})
			} else {
				var err error
				if b, err = protojson.Marshal(e.any); err != nil {
					b, _ = json.Marshal(map[string]string{"name": e.name, "error": err.Error()})
				}
			}
			out[shortType(t)] = append(out[shortType(t)], b)
		}
	}
	return out, true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
