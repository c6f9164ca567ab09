// Package proxystatus is `weft proxy-status`: every proxy connected to
// every weft-controller replica, and per xDS type whether it holds the
// newest configuration (SYNCED), has not answered it yet (STALE) or
// rejected it (NACKED, with the proxy's reason), read from each replica's
// /debug/proxies.
package proxystatus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/weftmesh/weft/xds"
)

// DebugPort is weft-controller's --debug-address port (localhost in the
// pod: reachable through a port-forward, not the pod proxy).
const DebugPort = 15014

// FetchTimeout bounds one replica's answer (10 s): /debug/proxies is a
// snapshot of in-memory state, answered in milliseconds even with
// thousands of proxies; a replica slower than that is reported, not
// waited for.
const FetchTimeout = 10 * time.Second

// Replica is one weft-controller replica's answer.
type Replica struct {
	// Name is the pod, or the address given.
	Name    string
	Proxies []xds.ProxyStatus
	Err     error
}

// Fetch reads /debug/proxies from base ("http://host:port").
func Fetch(ctx context.Context, c *http.Client, base string) ([]xds.ProxyStatus, error) {
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	u, err := url.JoinPath(base, "/debug/proxies")
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("%s: %s: %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	var out []xds.ProxyStatus
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	return out, nil
}

// columns are the xDS types shown, in Envoy's order of application, with
// their usual short names.
var columns = []struct{ typ, name string }{
	{"Cluster", "CDS"},
	{"ClusterLoadAssignment", "EDS"},
	{"Listener", "LDS"},
	{"RouteConfiguration", "RDS"},
	{"Secret", "SDS"},
}

// Print writes one row per proxy stream: its id, kind, replica, and per
// type the state with the acknowledged/sent generations; then every NACK
// with the proxy's reason, and replicas that did not answer. It returns
// how many streams have a NACKED type.
func Print(w io.Writer, rs []Replica) int {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	header := []string{"PROXY", "KIND", "REPLICA", "GENERATION"}
	for _, c := range columns {
		header = append(header, c.name)
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	type row struct {
		r Replica
		p xds.ProxyStatus
	}
	var rows []row
	for _, r := range rs {
		for _, p := range r.Proxies {
			rows = append(rows, row{r, p})
		}
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].p.ID != rows[j].p.ID {
			return rows[i].p.ID < rows[j].p.ID
		}
		return rows[i].r.Name < rows[j].r.Name
	})
	var nacks []string
	nacked := 0
	for _, x := range rows {
		p := x.p
		cells := []string{fmt.Sprintf("%s (stream %d)", p.ID, p.Stream), p.Kind, x.r.Name, fmt.Sprint(p.Generation)}
		any := false
		for _, c := range columns {
			ts, ok := p.Types[c.typ]
			if !ok {
				cells = append(cells, "-")
				continue
			}
			cells = append(cells, fmt.Sprintf("%s %d/%d", ts.State, ts.AckedGen, ts.SentGen))
			if ts.State == xds.Nacked && ts.Nack != nil {
				any = true
				n := ts.Nack
				res := ""
				if len(n.Resources) > 0 {
					res = " (resources " + strings.Join(n.Resources, ", ")
					if n.MoreResources > 0 {
						res += fmt.Sprintf(" and %d more", n.MoreResources)
					}
					res += ")"
				}
				nacks = append(nacks, fmt.Sprintf("%s %s NACKED at %s%s: %s", p.ID, c.name, n.At.UTC().Format(time.RFC3339), res, n.Message))
			}
		}
		if any {
			nacked++
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	tw.Flush()
	if len(rows) == 0 {
		fmt.Fprintln(w, "(no proxy is connected)")
	}
	fmt.Fprintln(w, "\nSYNCED: holds the newest configuration; STALE: sent, not answered yet; NACKED: rejected (keeps its last good one). Generations: acknowledged/sent.")
	if len(nacks) > 0 {
		fmt.Fprintln(w, "\nRejected configurations (weft translate -f … --proxy NAMESPACE/POD shows what was built):")
		for _, n := range nacks {
			fmt.Fprintln(w, "  "+n)
		}
	}
	for _, r := range rs {
		if r.Err != nil {
			fmt.Fprintf(w, "\nreplica %s did not answer: %v\n", r.Name, r.Err)
		}
	}
	return nacked
}

// ErrNotConnected: the replica asked has no stream of that proxy.
var ErrNotConnected = errors.New("not connected to this replica")

// ConfigDump reads /debug/config_dump for a proxy (its node id,
// "POD.NAMESPACE"; stream 0: any stream of it): xDS type → resources as
// JSON, secrets by name and version only. A replica without the proxy
// answers ErrNotConnected.
func ConfigDump(ctx context.Context, c *http.Client, base, nodeID string, stream uint64) (map[string][]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, FetchTimeout)
	defer cancel()
	u, err := url.JoinPath(base, "/debug/config_dump")
	if err != nil {
		return nil, err
	}
	q := url.Values{"proxy": {nodeID}}
	if stream != 0 {
		q.Set("stream", fmt.Sprint(stream))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, ErrNotConnected
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	var out map[string][]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	return out, nil
}

// ConfigTypes maps `weft proxy-config`'s type names to config_dump's.
var ConfigTypes = map[string]string{
	"clusters":  "Cluster",
	"endpoints": "ClusterLoadAssignment",
	"listeners": "Listener",
	"routes":    "RouteConfiguration",
	"secrets":   "Secret",
}
