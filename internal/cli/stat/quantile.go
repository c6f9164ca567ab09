package stat

import (
	"math"
	"sort"
)

// Quantile is the q-quantile of a cumulative histogram, as Prometheus'
// histogram_quantile computes it for classic histograms
// (prometheus/promql/quantile.go, BucketQuantile): buckets sorted by upper
// bound, equal bounds merged, decreases removed (the monotonic envelope),
// then the bucket whose cumulative count first reaches q × the +Inf count
// is interpolated linearly between its lower and upper bound (the lowest
// bucket from 0). A rank in the +Inf bucket gives the highest finite
// bound. NaN when there are no observations, fewer than two buckets, or no
// +Inf bucket.
func Quantile(q float64, buckets []Bucket) float64 {
	if math.IsNaN(q) {
		return math.NaN()
	}
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(1)
	}
	if len(buckets) == 0 {
		return math.NaN()
	}
	bs := append([]Bucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].UpperBound < bs[j].UpperBound })
	if !math.IsInf(bs[len(bs)-1].UpperBound, 1) {
		return math.NaN()
	}
	// coalesceBuckets
	merged := bs[:1]
	for _, b := range bs[1:] {
		if b.UpperBound == merged[len(merged)-1].UpperBound {
			merged[len(merged)-1].Count += b.Count
		} else {
			merged = append(merged, b)
		}
	}
	bs = merged
	// ensureMonotonic: a bucket never counts fewer than the one below it.
	for i := 1; i < len(bs); i++ {
		if bs[i].Count < bs[i-1].Count {
			bs[i].Count = bs[i-1].Count
		}
	}
	if len(bs) < 2 {
		return math.NaN()
	}
	observations := bs[len(bs)-1].Count
	if observations == 0 {
		return math.NaN()
	}
	rank := q * observations
	b := sort.Search(len(bs)-1, func(i int) bool { return bs[i].Count >= rank })
	if b == len(bs)-1 {
		return bs[len(bs)-2].UpperBound
	}
	if b == 0 && bs[0].UpperBound <= 0 {
		return bs[0].UpperBound
	}
	var start, below float64
	end, count := bs[b].UpperBound, bs[b].Count
	if b > 0 {
		start, below = bs[b-1].UpperBound, bs[b-1].Count
		count -= below
		rank -= below
	}
	return start + (end-start)*(rank/count)
}
