package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/weftmesh/weft/crds/v1alpha1"
	"github.com/weftmesh/weft/internal/cli/stat"
	"github.com/weftmesh/weft/internal/testing/localmesh"
)

// view is make run's live view: every interval, the calls the demo's
// clients made (weft stat's numbers: internal/cli/stat) over the last
// few seconds, and every policy's Programmed condition — when it last
// changed and when every proxy had ACKed it.
type view struct {
	m     *localmesh.Mesh
	urls  []string
	every time.Duration
	clear bool // redraw in place (a terminal)
	out   io.Writer

	reads map[string][]read // per URL, oldest first
}

type read struct {
	at time.Time
	s  stat.Scrape
}

// window is how far back the rates look: long enough that a 10% backend
// at 20 calls per second shows a steady share, short enough that an edit
// shows within a couple of refreshes.
const window = 5 * time.Second

func (v *view) run(ctx context.Context) error {
	v.reads = map[string][]read{}
	tick := time.NewTicker(v.every)
	defer tick.Stop()
	for {
		var b bytes.Buffer
		v.frame(ctx, &b)
		if v.clear {
			fmt.Fprint(v.out, "\033[H\033[2J")
		}
		if _, err := v.out.Write(b.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (v *view) frame(ctx context.Context, w io.Writer) {
	now := time.Now()
	fmt.Fprintf(w, "weft live view  %s  (calls over the last %v; Ctrl-C stops)\n\n", now.Format("15:04:05"), window)
	var sources []stat.Source
	for _, u := range v.urls {
		s := stat.Source{Name: u}
		sc, err := scrape(ctx, u)
		if err != nil {
			s.Err = err
			sources = append(sources, s)
			continue
		}
		reads := append(v.reads[u], read{at: now, s: sc})
		for len(reads) > 2 && now.Sub(reads[1].at) >= window {
			reads = reads[1:]
		}
		v.reads[u] = reads
		if len(reads) >= 2 {
			s.Window = stat.Delta(reads[0].s, sc, now.Sub(reads[0].at))
		}
		sources = append(sources, s)
	}
	var splits v1alpha1.TrafficSplitList
	_ = v.m.Env.Client.List(ctx, &splits)
	t := stat.Compute(sources, stat.Options{Kind: stat.Services, Namespace: localmesh.DemoNamespace, Splits: stat.SplitsFrom(splits.Items)})
	if err := stat.Render(w, t, stat.FormatTable); err != nil {
		fmt.Fprintf(w, "(%v)\n", err)
	}
	fmt.Fprintln(w)
	v.policies(ctx, w)
}

func scrape(ctx context.Context, url string) (stat.Scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return stat.Parse(resp.Body)
}

// policyKinds are the kinds the view lists (MeshConfig is one object with
// its own conditions; `kubectl get meshconfig weft` shows it).
var policyKinds = []string{"TrafficSplit", "RetryPolicy", "AuthPolicy", "BackendTrafficPolicy", "RateLimitPolicy"}

// policies prints each policy's Programmed condition in the demo's
// namespace: CHANGED is the last
// write to its spec (managedFields), ACKED when every connected proxy that
// needs it had ACKed that generation (Programmed turned True), and IN the
// time between — what a person editing a policy waits for.
func (v *view) policies(ctx context.Context, w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "POLICY\tGEN\tPROGRAMMED\tREASON\tCHANGED\tACKED\tIN\tMESSAGE")
	type row struct {
		name string
		line string
	}
	var rows []row
	for _, kind := range policyKinds {
		var list unstructured.UnstructuredList
		list.SetGroupVersionKind(schema.GroupVersionKind{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Kind: kind + "List"})
		if err := v.m.Env.Client.List(ctx, &list, client.InNamespace(localmesh.DemoNamespace)); err != nil {
			continue // a kind this build does not have
		}
		for _, u := range list.Items {
			var st struct {
				Conditions []metav1.Condition `json:"conditions"`
			}
			if raw, ok := u.Object["status"].(map[string]any); ok {
				_ = runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &st)
			}
			conds := st.Conditions
			changed := specChanged(&u)
			p := findCondition(conds, v1alpha1.ConditionProgrammed)
			status, reason, acked, in, msg := "-", "", "", "", ""
			if p != nil {
				status, reason, msg = string(p.Status), p.Reason, p.Message
				if p.ObservedGeneration != u.GetGeneration() {
					status, reason = "Unknown", "not yet observed"
				} else if p.Status == metav1.ConditionTrue {
					acked = p.LastTransitionTime.Format("15:04:05")
					if !changed.IsZero() && !p.LastTransitionTime.Time.Before(changed) {
						in = p.LastTransitionTime.Sub(changed).String()
					}
				}
			}
			if len(msg) > 60 {
				msg = msg[:57] + "..."
			}
			when := ""
			if !changed.IsZero() {
				when = changed.Format("15:04:05")
			}
			name := kind + " " + u.GetNamespace() + "/" + u.GetName()
			rows = append(rows, row{name: name, line: fmt.Sprintf("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s", name, u.GetGeneration(), status, reason, when, acked, in, strings.ReplaceAll(msg, "\n", " "))})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].name < rows[j].name })
	for _, r := range rows {
		fmt.Fprintln(tw, r.line)
	}
	_ = tw.Flush()
}

// specChanged is the last time anyone but the status writer wrote the
// object (managedFields' newest entry without a subresource).
func specChanged(u *unstructured.Unstructured) time.Time {
	var last time.Time
	for _, mf := range u.GetManagedFields() {
		if mf.Subresource == "" && mf.Time != nil && mf.Time.After(last) {
			last = mf.Time.Time
		}
	}
	return last
}

func findCondition(conds []metav1.Condition, t string) *metav1.Condition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}
