package blockdev

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Op names the kind of I/O a fault rule applies to.
type Op uint8

// The operations a rule can match; OpRead|OpWrite matches both.
const (
	OpRead Op = 1 << iota
	OpWrite
)

func (o Op) String() string {
	switch o {
	case OpRead:
		return "reads"
	case OpWrite:
		return "writes"
	}
	return "reads+writes"
}

// FaultKind is what a rule does to the I/O it matches.
type FaultKind uint8

const (
	// FaultError fails the I/O with an error wrapping ErrInjected.
	FaultError FaultKind = iota
	// FaultFlip flips one bit of each matching block in the data a read
	// returns, with no error: silent corruption on the way from the disk.
	FaultFlip
	// FaultRogue returns another block's contents for each matching block
	// of a read, with no error: a misdirected read, a "rogue" disk.
	FaultRogue
	// FaultDelay holds each matching I/O for the rule's Delay before
	// doing it: a slow disk.
	FaultDelay
)

func (k FaultKind) String() string {
	switch k {
	case FaultFlip:
		return "flip"
	case FaultRogue:
		return "rogue"
	case FaultDelay:
		return "delay"
	}
	return "error"
}

// Rule is one injected fault: what it does, to which operations, on which
// blocks, and how often.
type Rule struct {
	Kind FaultKind
	Ops  Op
	// Start and End delimit the blocks the rule covers, [Start, End); End 0
	// means to the end of the device.
	Start, End int64
	// Count is how many I/Os the rule fires on before it retires; 0 means
	// without limit.
	Count int
	// Prob is the probability that a matching I/O fires the rule; 0 means 1.
	Prob float64
	// Delay is how long a FaultDelay rule holds each I/O.
	Delay time.Duration
}

// String prints the rule in the form "error reads blocks 0-end count 3 p 0.5".
func (r Rule) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s blocks %d-", r.Kind, r.Ops, r.Start)

	if r.End == 0 {
		b.WriteString("end")
	} else {
		fmt.Fprintf(&b, "%d", r.End)
	}
	if r.Count > 0 {
		fmt.Fprintf(&b, " count %d", r.Count)
	}
	if r.Prob > 0 && r.Prob < 1 {
		fmt.Fprintf(&b, " p %g", r.Prob)
	}
	if r.Kind == FaultDelay {
		fmt.Fprintf(&b, " delay %s", r.Delay)
	}
	return b.String()
}

// overlaps reports whether the rule covers any of the blocks [first, last).
func (r Rule) overlaps(first, last int64) bool {
	return last > r.Start && (r.End == 0 || first < r.End)
}

// Faulty is a Device decorator that injects faults by rules. Rules fire in a
// reproducible order for a given seed and sequence of I/Os.
type Faulty struct {
	dev Device

	mu    sync.Mutex
	rules []*activeRule
	rng   *rand.Rand
}

type activeRule struct {
	Rule
	fired int
}

// NewFaulty wraps dev with no rules; seed makes probabilistic rules and bit
// positions reproducible.
func NewFaulty(dev Device, seed uint64) *Faulty {
	return &Faulty{dev: dev, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Add installs a rule.
func (f *Faulty) Add(r Rule) {
	if r.Ops == 0 {
		r.Ops = OpRead | OpWrite
	}
	f.mu.Lock()
	f.rules = append(f.rules, &activeRule{Rule: r})
	f.mu.Unlock()
}

// Clear removes every rule.
func (f *Faulty) Clear() {
	f.mu.Lock()
	f.rules = nil
	f.mu.Unlock()
}

// Rules returns the rules in force.
func (f *Faulty) Rules() []Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Rule, 0, len(f.rules))
	for _, r := range f.rules {
		out = append(out, r.Rule)
	}
	return out
}

// fire returns the rules of the given kind that fire for an I/O of op on the
// blocks [first, last), counting them and retiring exhausted ones.
func (f *Faulty) fire(op Op, kind FaultKind, first, last int64) []Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Rule
	kept := f.rules[:0]
	for _, r := range f.rules {
		if r.Kind == kind && r.Ops&op != 0 && r.overlaps(first, last) &&
			(r.Prob <= 0 || r.Prob >= 1 || f.rng.Float64() < r.Prob) {
			out = append(out, r.Rule)
			r.fired++
		}
		if r.Count == 0 || r.fired < r.Count {
			kept = append(kept, r)
		}
	}
	f.rules = kept
	return out
}

// Size returns the device's size in bytes.
func (f *Faulty) Size() int64 { return f.dev.Size() }

// ReadAt reads through the rules: an error rule fails the read, a flip rule
// corrupts the blocks it covers.
func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	first, last := off/BlockSize, (off+int64(len(p)))/BlockSize
	f.delay(OpRead, first, last)
	if hit := f.fire(OpRead, FaultError, first, last); hit != nil {
		return 0, fmt.Errorf("read %d bytes at %d (%s): %w", len(p), off, hit[0], ErrInjected)
	}
	n, err := f.dev.ReadAt(p, off)
	if err != nil {
		return n, err
	}
	for _, r := range f.fire(OpRead, FaultFlip, first, last) {
		lo, hi := r.clip(first, last)
		f.mu.Lock()
		for b := lo; b < hi; b++ {
			bit := f.rng.IntN(BlockSize * 8)
			p[(b-first)*BlockSize+int64(bit/8)] ^= 1 << (bit % 8)
		}
		f.mu.Unlock()
	}
	for _, r := range f.fire(OpRead, FaultRogue, first, last) {
		lo, hi := r.clip(first, last)
		for b := lo; b < hi; b++ {
			// The neighbouring block (in the same 8-block group) answers.
			other := b ^ 1
			if (other+1)*BlockSize > f.dev.Size() {
				other = b - 1
			}
			if _, err := f.dev.ReadAt(p[(b-first)*BlockSize:(b-first+1)*BlockSize], other*BlockSize); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// delay holds an I/O for the longest delay rule it matches.
func (f *Faulty) delay(op Op, first, last int64) {
	var d time.Duration
	for _, r := range f.fire(op, FaultDelay, first, last) {
		d = max(d, r.Delay)
	}
	if d > 0 {
		time.Sleep(d) // the injected fault itself: a slow disk
	}
}

// clip returns the blocks of [first, last) that the rule covers.
func (r Rule) clip(first, last int64) (int64, int64) {
	lo, hi := max(first, r.Start), last
	if r.End != 0 {
		hi = min(hi, r.End)
	}
	return lo, hi
}

// WriteAt writes through the rules: an error rule fails the write before any
// of it lands.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	first, last := off/BlockSize, (off+int64(len(p)))/BlockSize
	f.delay(OpWrite, first, last)
	if hit := f.fire(OpWrite, FaultError, first, last); hit != nil {
		return 0, fmt.Errorf("write %d bytes at %d (%s): %w", len(p), off, hit[0], ErrInjected)
	}
	return f.dev.WriteAt(p, off)
}

// ReadvAt passes a vectored read through in one call while no rule is in
// force, and applies the rules piece by piece otherwise.
func (f *Faulty) ReadvAt(bufs [][]byte, off int64) (int, error) {
	if f.idle() {
		return ReadvAt(f.dev, bufs, off)
	}
	return ReadvAt(struct{ Device }{f}, bufs, off)
}

// WritevAt is ReadvAt's counterpart for writes.
func (f *Faulty) WritevAt(bufs [][]byte, off int64) (int, error) {
	if f.idle() {
		return WritevAt(f.dev, bufs, off)
	}
	return WritevAt(struct{ Device }{f}, bufs, off)
}

// idle reports whether no rule is in force.
func (f *Faulty) idle() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rules) == 0
}

// Sync passes through.
func (f *Faulty) Sync() error { return f.dev.Sync() }

// Close passes through.
func (f *Faulty) Close() error { return f.dev.Close() }
