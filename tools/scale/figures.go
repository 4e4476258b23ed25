package scale

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Units of a figure; they decide how it is printed.
const (
	UnitMs    = "ms"
	UnitRows  = "rows"
	UnitStmts = "statements"
	UnitBytes = "bytes"
	UnitCount = ""
)

// Figure is one measured value of one database.
type Figure struct {
	Name   string
	Unit   string
	Value  float64
	Target Target
}

// Figures is everything measured on one database, in table order.
type Figures struct {
	Database string // its name
	Orders   int64
	Batch    int
	List     []Figure
}

func (f *Figures) add(name, unit string, v float64, t Target) {
	f.List = append(f.List, Figure{Name: name, Unit: unit, Value: v, Target: t})
}

func (f *Figures) ms(name string, d time.Duration, t Target) {
	f.add(name, UnitMs, float64(d)/float64(time.Millisecond), t)
}

func (f *Figures) get(name string) (Figure, bool) {
	for _, x := range f.List {
		if x.Name == name {
			return x, true
		}
	}
	return Figure{}, false
}

// TargetKind says how a target judges a figure.
type TargetKind int

const (
	NoTarget TargetKind = iota // shown, not judged
	AtMost                     // value <= Bound
	Exactly                    // value == Bound
)

// Target is what a figure must be on either database.
type Target struct {
	Kind  TargetKind
	Bound float64
	Unit  string
	Why   string // a short reason printed after the bound, if any
}

func atMost(bound float64, unit, why string) Target {
	return Target{Kind: AtMost, Bound: bound, Unit: unit, Why: why}
}

func exactly(v float64) Target { return Target{Kind: Exactly, Bound: v} }

// Met reports whether v meets the target.
func (t Target) Met(v float64) bool {
	switch t.Kind {
	case AtMost:
		return !math.IsNaN(v) && v <= t.Bound
	case Exactly:
		return v == t.Bound
	}
	return true
}

func (t Target) String() string {
	var s string
	switch t.Kind {
	case AtMost:
		s = "≤ " + format(t.Bound, t.Unit)
	case Exactly:
		s = "= " + format(t.Bound, t.Unit)
	default:
		return ""
	}
	if t.Why != "" {
		s += " (" + t.Why + ")"
	}
	return s
}

// format writes a value with its unit: milliseconds with a precision that
// suits their size, counts whole.
func format(v float64, unit string) string {
	if math.IsNaN(v) {
		return "–"
	}
	switch unit {
	case UnitMs:
		switch {
		case v < 10:
			return fmt.Sprintf("%.2f ms", v)
		case v < 1000:
			return fmt.Sprintf("%.0f ms", v)
		}
		return fmt.Sprintf("%.2f s", v/1000)
	case UnitCount:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(math.Round(v), 'f', -1, 64) + " " + unit
}
