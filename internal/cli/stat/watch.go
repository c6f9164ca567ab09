package stat

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Between turns two rounds of reads into Sources: each source's Window
// from its earlier to its later read. A source that failed its later read
// is reported with that error, one that failed only its earlier read with
// that; a source new in the later round (a pod that just started) is left
// for the next window.
func Between(before, after []Read) []Source {
	prev := map[string]Read{}
	for _, r := range before {
		prev[r.Name] = r
	}
	var out []Source
	for _, a := range after {
		s := Source{Name: a.Name, Pod: a.Pod}
		b, ok := prev[a.Name]
		switch {
		case a.Err != nil:
			s.Err = a.Err
		case !ok:
			continue
		case b.Err != nil:
			s.Err = fmt.Errorf("first read: %w", b.Err)
		default:
			s.Window = Delta(b.Scrape, a.Scrape, a.At.Sub(b.At))
		}
		out = append(out, s)
	}
	return out
}

// Collect reads every source twice, interval apart, and returns what each
// counted in between.
func Collect(ctx context.Context, s Scraper, interval time.Duration) ([]Source, error) {
	first, err := s.Scrape(ctx)
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, interval); err != nil {
		return nil, err
	}
	second, err := s.Scrape(ctx)
	if err != nil {
		return nil, err
	}
	return Between(first, second), nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Live computes a Table every Interval from the reads of the last
// Interval: what `weft stat --watch` draws, and what `make run`'s live
// view can draw its own way (Tables).
type Live struct {
	Scraper  Scraper
	Interval time.Duration
	Options  Options
	// Splits, when set, reads the TrafficSplits before each Table (a
	// weight changed with kubectl shows in the next one); otherwise
	// Options.Splits stay.
	Splits func(ctx context.Context) ([]Split, error)
	// Query, when set, replaces Scraper: it answers with rates already
	// (Prometheus.Sources), so a Table comes at once and every Interval.
	Query func(ctx context.Context) ([]Source, error)
}

// options are l.Options with the TrafficSplits read now, and the problem
// reading them.
func (l Live) options(ctx context.Context) (Options, []string) {
	o := l.Options
	if l.Splits == nil {
		return o, nil
	}
	splits, err := l.Splits(ctx)
	if err != nil {
		return o, []string{"TrafficSplits not read (backends show as Services): " + err.Error()}
	}
	o.Splits = splits
	return o, nil
}

func (l Live) queryTables(ctx context.Context, fn func(*Table) error) error {
	for {
		o, problems := l.options(ctx)
		srcs, err := l.Query(ctx)
		t := Compute(srcs, o)
		if err != nil {
			problems = append(problems, err.Error())
		}
		t.Problems = append(t.Problems, problems...)
		if err := fn(t); err != nil {
			return err
		}
		if err := sleep(ctx, l.Interval); err != nil {
			return err
		}
	}
}

// Tables calls fn with a Table every Interval until ctx ends or fn
// returns an error. The first comes one Interval after the call (it needs
// two reads), or at once with Query. A round with nothing to read (no sidecar pod yet) is a
// Table with that Problem, and the watch goes on.
func (l Live) Tables(ctx context.Context, fn func(*Table) error) error {
	if l.Interval <= 0 {
		return errors.New("the interval must be positive")
	}
	if l.Query != nil {
		return l.queryTables(ctx, fn)
	}
	prev, err := l.Scraper.Scrape(ctx)
	for {
		if err := sleep(ctx, l.Interval); err != nil {
			return err
		}
		cur, curErr := l.Scraper.Scrape(ctx)
		o, problems := l.options(ctx)
		var t *Table
		switch {
		case curErr != nil:
			t = Compute(nil, o)
			problems = append(problems, curErr.Error())
		case err != nil:
			// The previous round had nothing to read: this one is the
			// first of a window.
			t = Compute(nil, o)
		default:
			t = Compute(Between(prev, cur), o)
		}
		t.Problems = append(t.Problems, problems...)
		if err := fn(t); err != nil {
			return err
		}
		prev, err = cur, curErr
	}
}

// clearScreen moves the cursor home and clears the terminal (ANSI), as
// watch(1) redraws.
const clearScreen = "\x1b[H\x1b[2J"

// Watch redraws the Table every Interval on w until ctx ends: a title line
// (what is shown, the window and the time) and the table; with JSON, one
// document per Interval and no redrawing.
func (l Live) Watch(ctx context.Context, w io.Writer, format, title string) error {
	err := l.Tables(ctx, func(t *Table) error {
		if format == FormatJSON {
			return Render(w, t, format)
		}
		var b strings.Builder
		b.WriteString(clearScreen)
		fmt.Fprintf(&b, "%s   every %s   %s\n\n", title, l.Interval, time.Now().Format("15:04:05"))
		if err := Render(&b, t, format); err != nil {
			return err
		}
		_, err := io.WriteString(w, b.String())
		return err
	})
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Watch redraws the Services table read from s every interval on w until
// ctx ends: the live view's one call (o.Kind chooses another table).
func Watch(ctx context.Context, s Scraper, interval time.Duration, w io.Writer, o Options) error {
	title := "weft stat " + string(o.Kind)
	if o.Kind == "" {
		title = "weft stat svc"
	}
	return Live{Scraper: s, Interval: interval, Options: o}.Watch(ctx, w, FormatTable, title)
}

// Once is one Table: two reads Interval apart (or one Query).
func (l Live) Once(ctx context.Context) (*Table, error) {
	var srcs []Source
	var err error
	if l.Query != nil {
		srcs, err = l.Query(ctx)
	} else {
		srcs, err = Collect(ctx, l.Scraper, l.Interval)
	}
	if err != nil {
		return nil, err
	}
	o, problems := l.options(ctx)
	t := Compute(srcs, o)
	t.Problems = append(t.Problems, problems...)
	return t, nil
}
