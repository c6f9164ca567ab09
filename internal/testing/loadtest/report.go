package loadtest

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/weftmesh/weft/translator"
)

// Print writes the report as a table per fleet.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	scope := "scoped (a proxy sees its namespace's Services and the 2 shared ones)"
	switch {
	case c.ExportAll:
		scope = "every Service exported to every namespace"
	case c.Scoped:
		scope = c.scopeDescription()
	}
	splits := "one split between global and global-next on port 8000"
	if c.Splits > 0 {
		splits = fmt.Sprintf("%d splits among the port-80 Services", c.Splits)
	}
	fmt.Fprintf(w, "mesh: %d Services × %d endpoints in %d namespaces, %s, %s; %d objects created in %.1fs\n",
		c.Services, c.Endpoints, c.Namespaces, scope, splits, r.Objects, r.Setup)
	fmt.Fprintf(w, "load average (1 min): %.2f before, %.2f after\n", r.LoadBefore, r.LoadAfter)
	for _, f := range r.Fleets {
		plane := f.Plane
		if plane == "" {
			plane = Weft
		}
		fmt.Fprintf(w, "\n%s: %d proxies in %d groups over %d gRPC connections (ready in %.1fs)\n", plane, f.Proxies, f.Groups, f.Conns, f.ControllerReady)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		row := func(what, value string) { fmt.Fprintf(tw, "  %s\t%s\n", what, value) }
		row("all proxies hold a full config after connecting at once",
			fmt.Sprintf("%s (p50 %s; %d streams for %d proxies); CPU: controller %.1f s, simulated proxies %.1f s",
				secs(f.ColdStart.Max), secs(f.ColdStart.P50), f.Streams, f.Proxies, f.ColdStartCPU, f.ColdStartHarnessCPU))
		row("config per proxy", fmt.Sprintf("%s mean, %s max; %.0f resources (%s)", size(f.ConfigBytes.Mean), size(f.ConfigBytes.Max), f.Resources.Mean, byType(f.ConfigBytesByType)))
		heap := fmt.Sprintf("live heap after %d GCs", f.HeapGCs)
		if !f.HeapAfterGC {
			heap = "smallest heap in use of 5 samples, garbage included"
		}
		row("controller heap per connected proxy", fmt.Sprintf("%s (%s: %s → %s); RSS %s per proxy",
			size(f.HeapPerProxy), heap, size(f.HeapBefore), size(f.HeapAfter), size(f.RSSPerProxy)))
		if f.RuntimeAfter.Sys > 0 {
			row("controller RSS, before → after connecting", fmt.Sprintf("%s → %s; the runtime's account: %s → %s",
				size(f.RSSBefore), size(f.RSSAfter), runtimeAccount(f.RuntimeBefore), runtimeAccount(f.RuntimeAfter)))
		}
		row(fmt.Sprintf("weight change → ACK, %d repeats × %s", len(f.Weight), waited(f.WeightProxies, f.Proxies)),
			fmt.Sprintf("%s; %.1f pushes, %s per proxy per change; controller CPU %.2f s per change; %d missed",
				dist(f.WeightAll), f.WeightPushes, size(f.WeightBytes), f.WeightCPU, f.WeightMissed))
		for i, d := range f.Weight {
			row(fmt.Sprintf("  repeat %d", i+1), dist(d))
		}
		if f.NewService.N > 0 || f.NewServiceMissed > 0 {
			row(fmt.Sprintf("new Service → each of %s holds its cluster and a route to it", waited(f.NewServiceProxies, f.Proxies)), fmt.Sprintf("%s; %d missed", dist(f.NewService), f.NewServiceMissed))
		}
		o := f.OnePercent
		row(fmt.Sprintf("endpoints of %d Services (%.3g%%) change at once", o.Services, 100*float64(o.Services)/float64(c.Services)),
			fmt.Sprintf("%d of %d proxies depend on them, %d received anything: %.1f pushes, %s each (%s per proxy over all); server pushes %.0f; controller CPU %.2f s",
				o.Dependents, f.Proxies, o.Receivers, o.PushesPerReceiver, size(o.BytesPerReceiver), size(o.BytesPerProxy), o.ServerPushes, o.CPU))
		row("  write → ACK", fmt.Sprintf("%s; %d missed", dist(o.Latency), o.Missed))
		if ch := f.Churn; ch.Changes > 0 {
			row(fmt.Sprintf("%.0f endpoint changes/s for %.0fs, EDS write → ACK", ch.Rate, ch.For),
				fmt.Sprintf("%s over %d deliveries; %d missed, %d failed writes; controller busy %.2f cores (%.1f CPU s; %.1f CPU s until all delivered, %.1f s after the first write)",
					dist(ch.Latency), ch.Latency.N, ch.Missed, ch.Failed, ch.CPU, ch.CPUSeconds, ch.CPUToDelivery, ch.DeliveredAfter))
		}
		tw.Flush()
	}
}

// waited says how many proxies a change was timed on: n of all, or all
// (also when a report predates the count).
func waited(n, all int) string {
	if n <= 0 || n == all {
		return fmt.Sprintf("%d proxies", all)
	}
	return fmt.Sprintf("the %d of %d proxies that see it", n, all)
}

// scopeDescription says how Scoped scopes each plane, for the reports.
func (m Mesh) scopeDescription() string {
	return fmt.Sprintf(`scoped: each proxy sees its own namespace only (weft: %s "." on every Service and namespace; istiod: Sidecar %s/default, egress "./*"); weight changes and new Services wait for the proxies of their namespace`,
		translator.AnnotationExportTo, IstioNamespace)
}

func dist(d Dist) string {
	if d.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s", secs(d.P50), secs(d.P90), secs(d.P99), secs(d.Max))
}

// secs prints seconds as ms below 10 s.
func secs(s float64) string {
	if s < 10 {
		return fmt.Sprintf("%.1f ms", s*1e3)
	}
	return fmt.Sprintf("%.1f s", s)
}

func size(b float64) string {
	switch {
	case b >= 1<<20 || b <= -(1<<20):
		return fmt.Sprintf("%.2f MiB", b/(1<<20))
	case b >= 1<<10 || b <= -(1<<10):
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func byType(m map[string]float64) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+" "+size(m[k]))
	}
	return strings.Join(parts, ", ")
}

// runtimeAccount says where the runtime's memory went: heap spans in use,
// free spans it kept mapped, stacks, and all it holds from the OS.
func runtimeAccount(m RuntimeMemory) string {
	return fmt.Sprintf("heap in use %s, free but kept %s, stacks %s (runtime total %s)",
		size(m.HeapInuse), size(m.HeapIdle-m.HeapReleased), size(m.StackInuse), size(m.Sys-m.HeapReleased))
}
