package stat

import "time"

// Window is what one source counted between two reads: its clusters'
// counter increases (Requests, Responses, Buckets) over Seconds, and each
// cluster's open connections at the later read.
type Window struct {
	Seconds  float64
	Clusters map[string]*Counters
}

// Delta is the Window between two reads of one source taken d apart. A
// counter that went down was reset (the proxy restarted, or the cluster
// was removed and added again): its increase is its later value, as
// Prometheus' rate() and increase() take it. A cluster missing from the
// first read was added in between: everything it counted is new.
func Delta(before, after Scrape, d time.Duration) *Window {
	w := &Window{Seconds: d.Seconds(), Clusters: map[string]*Counters{}}
	for name, a := range after {
		b := before[name]
		if b == nil {
			b = &Counters{}
		}
		c := &Counters{
			Requests:       increase(b.Requests, a.Requests),
			HasRequests:    a.HasRequests,
			Connections:    a.Connections,
			HasConnections: a.HasConnections,
		}
		if len(a.Responses) > 0 {
			c.Responses = map[string]float64{}
			for class, v := range a.Responses {
				c.Responses[class] = increase(b.Responses[class], v)
			}
		}
		for _, ab := range a.Buckets {
			var before float64
			for _, bb := range b.Buckets {
				if bb.UpperBound == ab.UpperBound {
					before = bb.Count
				}
			}
			c.Buckets = append(c.Buckets, Bucket{UpperBound: ab.UpperBound, Count: increase(before, ab.Count)})
		}
		w.Clusters[name] = c
	}
	return w
}

func increase(before, after float64) float64 {
	if after < before {
		return after
	}
	return after - before
}
