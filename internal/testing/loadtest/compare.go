package loadtest

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/template"
)

// row is one line of the comparison: a name and how to read it from a
// fleet report, and how to print it.
type row struct {
	what   string
	value  func(FleetReport) float64
	format func(float64) string
}

var compareRows = []row{
	{"all proxies hold a full config (cold start, last proxy)", func(f FleetReport) float64 { return f.ColdStart.Max }, secs},
	{"… cold start p50", func(f FleetReport) float64 { return f.ColdStart.P50 }, secs},
	{"… controller CPU during the cold start", func(f FleetReport) float64 { return f.ColdStartCPU }, cpuSecs},
	{"… streams opened (more than proxies: refused and retried)", func(f FleetReport) float64 { return float64(f.Streams) }, count},
	{"config per proxy (resource bytes)", func(f FleetReport) float64 { return f.ConfigBytes.Mean }, size},
	{"… resources per proxy", func(f FleetReport) float64 { return f.Resources.Mean }, count},
	{"weight change → every proxy ACKed, p50", func(f FleetReport) float64 { return f.WeightAll.P50 }, secs},
	{"weight change → every proxy ACKed, p99", func(f FleetReport) float64 { return f.WeightAll.P99 }, secs},
	{"… bytes pushed per proxy per change", func(f FleetReport) float64 { return f.WeightBytes }, size},
	{"… controller CPU per change", func(f FleetReport) float64 { return f.WeightCPU }, cpuSecs},
	{"new Service → every proxy has it, p99", func(f FleetReport) float64 { return f.NewService.P99 }, secs},
	{"endpoint churn, EDS write → ACK p99", func(f FleetReport) float64 { return f.Churn.Latency.P99 }, secs},
	{"… controller CPU in the churn window", func(f FleetReport) float64 { return f.Churn.CPUSeconds }, cpuSecs},
	{"… controller CPU until every change was delivered", func(f FleetReport) float64 { return f.Churn.CPUToDelivery }, cpuSecs},
	{"live heap per connected proxy", func(f FleetReport) float64 { return f.HeapPerProxy }, size},
	{"RSS per connected proxy", func(f FleetReport) float64 { return f.RSSPerProxy }, size},
	{"controller live heap with every proxy connected", func(f FleetReport) float64 { return f.HeapAfter }, size},
	{"controller RSS with every proxy connected", func(f FleetReport) float64 { return f.RSSAfter }, size},
	{"missed (proxy × change pairs that never converged)", func(f FleetReport) float64 {
		return float64(f.WeightMissed + f.NewServiceMissed + f.Churn.Missed + f.OnePercent.Missed)
	}, count},
}

func cpuSecs(s float64) string { return fmt.Sprintf("%.2f CPU s", s) }
func count(n float64) string   { return fmt.Sprintf("%.0f", n) }

// pairs returns, per proxy count in order, the weft and istiod reports
// (either may be nil).
func (r *Report) pairs() (counts []int, by map[int]map[Flavor]*FleetReport) {
	by = map[int]map[Flavor]*FleetReport{}
	for i := range r.Fleets {
		f := &r.Fleets[i]
		if by[f.Proxies] == nil {
			by[f.Proxies] = map[Flavor]*FleetReport{}
			counts = append(counts, f.Proxies)
		}
		p := f.Plane
		if p == "" {
			p = Weft
		}
		by[f.Proxies][p] = f
	}
	slices.Sort(counts)
	return counts, by
}

// PrintComparison writes one Markdown table per proxy count: weft,
// istiod, and istiod ÷ weft (above 1: weft needs less, for every row).
func (r *Report) PrintComparison(w io.Writer) {
	counts, by := r.pairs()
	c := r.Config
	ports := "all on port 80"
	if c.AltPort {
		ports = fmt.Sprintf("all on port 80, every second one also on %d", AltPort)
	}
	scope := "every Service visible to every proxy"
	if c.Scoped {
		scope = c.scopeDescription()
	}
	fmt.Fprintf(w, "mesh: %d Services × %d endpoints in %d namespaces, %s, %d splits, %s; each proxy its own workload (%d groups max)\n",
		c.Services, c.Endpoints, c.Namespaces, ports, c.Splits, scope, c.Groups)
	for _, n := range counts {
		wf, is := by[n][Weft], by[n][Istiod]
		fmt.Fprintf(w, "\n%d proxies\n\n| what | weft | istiod | istiod ÷ weft |\n| --- | ---: | ---: | ---: |\n", n)
		for _, rw := range compareRows {
			cell := func(f *FleetReport) string {
				if f == nil {
					return "—"
				}
				return rw.format(rw.value(*f))
			}
			ratio := "—"
			if wf != nil && is != nil {
				a, b := rw.value(*wf), rw.value(*is)
				switch {
				case a > 0 && b >= 0:
					ratio = fmt.Sprintf("%.2f×", b/a)
				case a == 0 && b == 0:
					ratio = "="
				}
			}
			what := rw.what
			if c.Scoped {
				what = strings.Replace(what, "→ every proxy", "→ every proxy that sees it", 1)
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s |\n", what, cell(wf), cell(is), ratio)
		}
		if wf != nil && is != nil {
			if c.Scoped {
				printTargets(w, n, scopedTargets, *wf, *is)
			} else {
				printTargets(w, n, targets, *wf, *is)
			}
		}
	}
	printMarginal(w, counts, by)
}

// printMarginal writes what each added proxy cost between the smallest
// and the largest fleet, where both planes ran both: the live heap with
// every proxy connected, differenced. "Live heap per connected proxy"
// divides everything a plane allocates once its first proxy connects
// (weft's encodings of the mesh, istiod's caches) by the fleet's size;
// this is the part that grows with proxies. Informational: issue 14's
// target is judged on the per-connected-proxy figure.
func printMarginal(w io.Writer, counts []int, by map[int]map[Flavor]*FleetReport) {
	if len(counts) < 2 {
		return
	}
	lo, hi := counts[0], counts[len(counts)-1]
	per := func(p Flavor) (float64, bool) {
		a, b := by[lo][p], by[hi][p]
		if a == nil || b == nil || a.HeapAfter <= 0 || b.HeapAfter <= 0 {
			return 0, false
		}
		return (b.HeapAfter - a.HeapAfter) / float64(hi-lo), true
	}
	wp, wok := per(Weft)
	ip, iok := per(Istiod)
	if !wok || !iok {
		return
	}
	ratio := "—"
	if wp > 0 {
		ratio = fmt.Sprintf("%.1f×", ip/wp)
	}
	fmt.Fprintf(w, "\nlive heap per added proxy, %d → %d proxies (the difference of the two fleets' live heaps with every proxy connected): weft %s, istiod %s, istiod ÷ weft %s\n",
		lo, hi, size(wp), size(ip), ratio)
}

// target is one of issue 14's goals, judged on one fleet size.
type target struct {
	what string
	// met says whether it is met, with the numbers that say so; ok is
	// false when the run cannot judge it.
	judge func(n int, w, i FleetReport) (met bool, numbers string, ok bool)
}

// ratioAtLeast: istiod's value ÷ weft's ≥ k.
func ratioAtLeast(k float64, value func(FleetReport) float64, format func(float64) string) func(int, FleetReport, FleetReport) (bool, string, bool) {
	return func(_ int, w, i FleetReport) (bool, string, bool) {
		a, b := value(w), value(i)
		if a <= 0 || b <= 0 {
			return false, "", false
		}
		return b/a >= k, fmt.Sprintf("weft %s, istiod %s: %.2f×", format(a), format(b), b/a), true
	}
}

var targets = []target{
	{"weight change p99 ≥ 10× faster", ratioAtLeast(10, func(f FleetReport) float64 { return f.WeightAll.P99 }, secs)},
	{"≤ 2 KB pushed per proxy per weight change", func(_ int, w, _ FleetReport) (bool, string, bool) {
		return w.WeightBytes <= 2000, "weft " + size(w.WeightBytes), w.WeightAll.N > 0
	}},
	{"new Service p99 ≥ 10× faster", ratioAtLeast(10, func(f FleetReport) float64 { return f.NewService.P99 }, secs)},
	{"churn EDS p99 ≥ 10× faster", ratioAtLeast(10, func(f FleetReport) float64 { return f.Churn.Latency.P99 }, secs)},
	// The CPU that delivered the churn: until the last change reached
	// every proxy (Churn.CPUToDelivery), since istiod sends part of it
	// after the last write. Reports from before it existed judge the
	// write window.
	{"churn CPU ≤ istiod's (until delivered)", func(_ int, w, i FleetReport) (bool, string, bool) {
		wc, ic := w.Churn.CPUToDelivery, i.Churn.CPUToDelivery
		if wc == 0 || ic == 0 {
			wc, ic = w.Churn.CPUSeconds, i.Churn.CPUSeconds
		}
		return wc <= ic, fmt.Sprintf("weft %s, istiod %s", cpuSecs(wc), cpuSecs(ic)), w.Churn.Changes > 0
	}},
	{"cold start ≥ 10× faster", ratioAtLeast(10, func(f FleetReport) float64 { return f.ColdStart.Max }, secs)},
	{"live heap per proxy ≥ 20× less", ratioAtLeast(20, func(f FleetReport) float64 { return f.HeapPerProxy }, size)},
	{"RSS ≤ 300 MiB at 500 proxies", func(n int, w, _ FleetReport) (bool, string, bool) {
		return w.RSSAfter <= 300<<20, "weft " + size(w.RSSAfter), n == 500
	}},
}

// scopedTargets is issue 14's target with both planes scoped to their
// namespace (Scoped); the others are set in istiod's default setup.
var scopedTargets = []target{
	{"live heap per proxy ≥ 2× less (both scoped)", ratioAtLeast(2, func(f FleetReport) float64 { return f.HeapPerProxy }, size)},
}

// printTargets lists issue 14's targets as met or not for one fleet size.
func printTargets(w io.Writer, n int, targets []target, wf, is FleetReport) {
	fmt.Fprintf(w, "\nissue 14's targets at %d proxies:\n\n", n)
	for _, t := range targets {
		met, numbers, ok := t.judge(n, wf, is)
		if !ok {
			continue
		}
		verdict := "not met"
		if met {
			verdict = "met"
		}
		fmt.Fprintf(w, "- %s: **%s** (%s)\n", t.what, verdict, numbers)
	}
}

// series is one line of a plot.
type series struct {
	Name, Color, Dash string
	Points            []point
}

type point struct {
	X, Y   float64 // data
	PX, PY float64 // pixels
	Label  string
}

type panel struct {
	Title, YUnit   string
	X, Y, W, H     float64
	Series         []series
	XTicks, YTicks []tick
}

type tick struct {
	P     float64
	Label string
}

// WritePlot writes an SVG of convergence (weight change, new Service and
// churn p99, cold start) and memory (live heap and RSS per proxy)
// against proxy count, weft solid, istiod dashed.
func (r *Report) WritePlot(w io.Writer) error {
	counts, by := r.pairs()
	type metric struct {
		name  string
		color string
		value func(FleetReport) float64
	}
	conv := []metric{
		{"weight change p99", "#1f77b4", func(f FleetReport) float64 { return f.WeightAll.P99 }},
		{"new Service p99", "#2ca02c", func(f FleetReport) float64 { return f.NewService.P99 }},
		{"EDS churn p99", "#d62728", func(f FleetReport) float64 { return f.Churn.Latency.P99 }},
		{"cold start (all)", "#9467bd", func(f FleetReport) float64 { return f.ColdStart.Max }},
	}
	mem := []metric{
		{"live heap per proxy", "#1f77b4", func(f FleetReport) float64 { return f.HeapPerProxy / 1024 }},
		{"RSS per proxy", "#ff7f0e", func(f FleetReport) float64 { return f.RSSPerProxy / 1024 }},
	}
	// build lays out one panel; a logarithmic one (convergence: churn's
	// seconds beside weight changes' milliseconds) spans whole decades.
	build := func(title, unit string, x float64, ms []metric, logY bool) panel {
		p := panel{Title: title, YUnit: unit, X: x, Y: 50, W: 400, H: 300}
		var minY, maxY float64
		for _, m := range ms {
			for _, fl := range []Flavor{Weft, Istiod} {
				s := series{Name: fmt.Sprintf("%s, %s", fl, m.name), Color: m.color}
				if fl == Istiod {
					s.Dash = "6,4"
				}
				for _, n := range counts {
					if f := by[n][fl]; f != nil {
						v := m.value(*f)
						if logY && v <= 0 {
							continue // no sample: nothing to draw
						}
						s.Points = append(s.Points, point{X: float64(n), Y: v})
						if minY == 0 || v < minY {
							minY = v
						}
						maxY = math.Max(maxY, v)
					}
				}
				if len(s.Points) > 0 {
					p.Series = append(p.Series, s)
				}
			}
		}
		if maxY <= 0 {
			maxY = 1
		}
		lo, hi := 0.0, maxY
		scale := func(v float64) float64 { return (v - lo) / (hi - lo) }
		if logY {
			lo, hi = math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
			if hi <= lo {
				hi = lo + 1
			}
			scale = func(v float64) float64 { return (math.Log10(v) - lo) / (hi - lo) }
		}
		maxX := 1.0
		if len(counts) > 0 {
			maxX = float64(counts[len(counts)-1])
		}
		for i := range p.Series {
			for j := range p.Series[i].Points {
				pt := &p.Series[i].Points[j]
				pt.PX = math.Round((p.X+pt.X/maxX*p.W)*10) / 10
				pt.PY = math.Round((p.Y+p.H-scale(pt.Y)*p.H)*10) / 10
				pt.Label = fmt.Sprintf("%.3g", pt.Y)
			}
		}
		for _, n := range counts {
			p.XTicks = append(p.XTicks, tick{P: p.X + float64(n)/maxX*p.W, Label: fmt.Sprint(n)})
		}
		if logY {
			for d := lo; d <= hi; d++ {
				p.YTicks = append(p.YTicks, tick{P: p.Y + p.H - (d-lo)/(hi-lo)*p.H, Label: fmt.Sprintf("%g", math.Pow(10, d))})
			}
		} else {
			for k := 0; k <= 4; k++ {
				p.YTicks = append(p.YTicks, tick{P: p.Y + p.H - float64(k)/4*p.H, Label: fmt.Sprintf("%.3g", maxY*float64(k)/4)})
			}
		}
		return p
	}
	panels := []panel{build("convergence, client side (s, log scale)", "s", 70, conv, true), build("memory per connected proxy (KiB)", "KiB", 590, mem, false)}
	c := r.Config
	title := fmt.Sprintf("weft (solid) vs istiod (dashed): %d Services × %d endpoints, %d splits, every Service visible", c.Services, c.Endpoints, c.Splits)
	legend := 0
	for _, p := range panels {
		legend = max(legend, len(p.Series))
	}
	return plotTemplate.Execute(w, map[string]any{"Title": title, "Panels": panels, "Height": 400 + 16*legend})
}

func polyline(pts []point) string {
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", p.PX, p.PY)
	}
	return b.String()
}

var plotTemplate = template.Must(template.New("plot").Funcs(template.FuncMap{
	"polyline": polyline,
	"add":      func(a, b float64) float64 { return a + b },
	"legendY":  func(i int) float64 { return 390 + 16*float64(i) },
}).Parse(`<svg xmlns="http://www.w3.org/2000/svg" width="1060" height="{{.Height}}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="530" y="22" text-anchor="middle" font-size="14">{{.Title}}</text>
{{range .Panels}}{{$p := .}}
<g>
<text x="{{add .X 200}}" y="{{add .Y -8}}" text-anchor="middle" font-size="12">{{.Title}}</text>
<line x1="{{.X}}" y1="{{add .Y .H}}" x2="{{add .X .W}}" y2="{{add .Y .H}}" stroke="black"/>
<line x1="{{.X}}" y1="{{.Y}}" x2="{{.X}}" y2="{{add .Y .H}}" stroke="black"/>
{{range .XTicks}}<line x1="{{.P}}" y1="{{add $p.Y $p.H}}" x2="{{.P}}" y2="{{add (add $p.Y $p.H) 4}}" stroke="black"/><text x="{{.P}}" y="{{add (add $p.Y $p.H) 16}}" text-anchor="middle">{{.Label}}</text>
{{end}}{{range .YTicks}}<line x1="{{add $p.X -4}}" y1="{{.P}}" x2="{{add $p.X $p.W}}" y2="{{.P}}" stroke="#ddd"/><text x="{{add $p.X -6}}" y="{{add .P 4}}" text-anchor="end">{{.Label}}</text>
{{end}}<text x="{{add .X 200}}" y="{{add (add .Y .H) 32}}" text-anchor="middle">simulated proxies</text>
{{range .Series}}<polyline fill="none" stroke="{{.Color}}" stroke-width="2"{{if .Dash}} stroke-dasharray="{{.Dash}}"{{end}} points="{{polyline .Points}}"/>
{{$s := .}}{{range .Points}}<circle cx="{{.PX}}" cy="{{.PY}}" r="3" fill="{{$s.Color}}"><title>{{$s.Name}}: {{.Label}} at {{.X}} proxies</title></circle>
{{end}}{{end}}{{range $i, $s := .Series}}<line x1="{{$p.X}}" y1="{{legendY $i}}" x2="{{add $p.X 24}}" y2="{{legendY $i}}" stroke="{{$s.Color}}" stroke-width="2"{{if $s.Dash}} stroke-dasharray="{{$s.Dash}}"{{end}}/><text x="{{add $p.X 30}}" y="{{add (legendY $i) 4}}">{{$s.Name}}</text>
{{end}}</g>
{{end}}</svg>
`))
