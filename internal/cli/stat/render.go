package stat

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Output formats.
const (
	FormatTable = ""
	FormatWide  = "wide"
	FormatJSON  = "json"
)

// Render prints t: an aligned table like `kubectl get` (a NAMESPACE column
// when t spans every namespace; -o wide adds the ports and how many
// sources counted each row), or JSON. A split's backends follow their root,
// indented. Sources that could not be read are listed under the table,
// each with what to do.
func Render(w io.Writer, t *Table, format string) error {
	switch format {
	case FormatJSON:
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		return e.Encode(t)
	case FormatTable, FormatWide:
	default:
		return fmt.Errorf("unknown output format %q: use wide or json", format)
	}
	wide := format == FormatWide
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	var head []string
	if t.Namespace == "" {
		head = append(head, "NAMESPACE")
	}
	head = append(head, "NAME", "SUCCESS", "RPS", "P50", "P95", "P99", "TCP")
	if t.Kind == Services {
		head = append(head, "SPLIT", "WEIGHT")
	}
	if wide {
		head = append(head, "PORTS", "SOURCES")
	}
	if len(t.Rows) > 0 {
		fmt.Fprintln(tw, strings.Join(head, "\t"))
	}
	line := func(r Row, name string) {
		var cells []string
		if t.Namespace == "" {
			cells = append(cells, r.Namespace)
		}
		cells = append(cells, name, percent(r.SuccessRate, 2), rps(r.RequestsPerSecond),
			millis(r.P50), millis(r.P95), millis(r.P99), strconv.FormatFloat(r.Connections, 'f', 0, 64))
		if t.Kind == Services {
			cells = append(cells, percent(r.Share, 1), percent(r.Weight, 0))
		}
		if wide {
			ports := make([]string, len(r.Ports))
			for i, p := range r.Ports {
				ports[i] = strconv.Itoa(p)
			}
			cells = append(cells, dash(strings.Join(ports, ",")), strconv.Itoa(r.Sources))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	for _, r := range t.Rows {
		line(r, r.Name)
		for i, b := range r.Backends {
			branch := "├─ "
			if i == len(r.Backends)-1 {
				branch = "└─ "
			}
			line(b, branch+b.Name)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(t.Rows) == 0 {
		fmt.Fprintln(w, t.empty())
	}
	if t.Idle > 0 {
		fmt.Fprintf(w, "(%d idle %s not shown: no requests or connections; name one to see it)\n", t.Idle, plural(t.Idle, map[Kind]string{Services: "Service", Deployments: "Deployment", Pods: "pod"}[t.Kind]))
	}
	for _, p := range t.Problems {
		fmt.Fprintf(w, "! %s\n", p)
	}
	return nil
}

func (t *Table) empty() string {
	what := map[Kind]string{Services: "calls to a Service", Deployments: "calls served by a Deployment's pods", Pods: "calls served by a pod"}[t.Kind]
	where := "any namespace"
	if t.Namespace != "" {
		where = "namespace " + t.Namespace
	}
	return fmt.Sprintf("No %s in %s over the last %s, from %d %s read.", what, where, seconds(t.Seconds), t.Sources, plural(t.Sources, "source"))
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

func seconds(s float64) string { return strconv.FormatFloat(s, 'f', 1, 64) + "s" }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func percent(f *float64, digits int) string {
	if f == nil {
		return "-"
	}
	return strconv.FormatFloat(*f*100, 'f', digits, 64) + "%"
}

func rps(f float64) string {
	if f > 0 && f < 1 {
		return strconv.FormatFloat(f, 'f', 2, 64)
	}
	return strconv.FormatFloat(f, 'f', 1, 64)
}

// millis prints a latency with three significant digits or so: 0.45ms,
// 4.50ms, 45.0ms, 450ms, 4.50s.
func millis(f *float64) string {
	if f == nil {
		return "-"
	}
	v := *f
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	case v < 1000:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	default:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
	}
}
