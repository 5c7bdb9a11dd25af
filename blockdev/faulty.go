package blockdev

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Op names the kind of I/O a fault rule applies to.
type Op uint8

// The operations a rule can match; OpRead|OpWrite matches both.
const (
	OpRead Op = 1 << iota
	OpWrite
)

var opNames = map[Op]string{OpRead: "reads", OpWrite: "writes", OpRead | OpWrite: "reads+writes"}

// String names the operations; 0, which a rule takes to mean those its
// kind applies to, prints as "".
func (o Op) String() string { return opNames[o] }

// ParseOp reads "read", "write" or "both" (or the plural forms String
// prints); "" is 0.
func ParseOp(s string) (Op, error) {
	switch s {
	case "read", "reads":
		return OpRead, nil
	case "write", "writes":
		return OpWrite, nil
	case "both", "reads+writes":
		return OpRead | OpWrite, nil
	case "":
		return 0, nil
	}
	return 0, fmt.Errorf("unknown operation %q: use read, write or both", s)
}

// MarshalText writes the operation as String does.
func (o Op) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads what ParseOp reads.
func (o *Op) UnmarshalText(b []byte) (err error) {
	*o, err = ParseOp(string(b))
	return err
}

// FaultKind is what a rule does to the I/O it matches.
type FaultKind uint8

const (
	// FaultError fails the I/O with an error wrapping ErrInjected.
	FaultError FaultKind = iota
	// FaultFlip flips one bit of each matching block in the data a read
	// returns, with no error: silent corruption on the way from the disk.
	// The disk itself keeps good data.
	FaultFlip
	// FaultRogue returns another block's contents for each matching block
	// of a read, with no error: a misdirected read, a "rogue" disk.
	FaultRogue
	// FaultDelay holds each matching I/O for the rule's Delay, plus up to
	// its Jitter, before doing it: a slow disk.
	FaultDelay
	// FaultStall holds each matching I/O until the rule expires or is
	// cleared: a disk that stops answering.
	FaultStall
	// FaultRot flips one bit of each matching block on the disk itself, with
	// no error: a write lands corrupted, and a read corrupts the block it
	// finds. Unlike FaultFlip it stays after the rule is gone.
	FaultRot
	// FaultTorn lands part of a matching write (some whole blocks, then half
	// of one) and then the device vanishes, as a disk that dies mid-write.
	FaultTorn
	// FaultVanish makes the device vanish at its first matching I/O: that
	// I/O and every later one fail with ErrVanished until the faults are
	// cleared.
	FaultVanish
	// FaultFull fails matching writes with ENOSPC, as a full thin-provisioned
	// or file-backed disk does.
	FaultFull
)

var kindNames = [...]string{"error", "flip", "rogue", "delay", "stall", "rot", "torn", "vanish", "full"}

func (k FaultKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("fault(%d)", k)
}

// FaultKinds lists the names ParseFaultKind accepts.
func FaultKinds() []string { return kindNames[:] }

// ParseFaultKind reads a fault kind's name.
func ParseFaultKind(s string) (FaultKind, error) {
	for i, n := range kindNames {
		if n == s {
			return FaultKind(i), nil
		}
	}
	return 0, fmt.Errorf("unknown fault %q: use one of %s", s, strings.Join(kindNames[:], ", "))
}

// MarshalText writes the kind's name.
func (k FaultKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name.
func (k *FaultKind) UnmarshalText(b []byte) (err error) {
	*k, err = ParseFaultKind(string(b))
	return err
}

// Rule is one injected fault: what it does, to which operations, on which
// blocks, how often and for how long.
type Rule struct {
	Kind FaultKind `json:"kind"`
	Ops  Op        `json:"ops"`
	// Start and End delimit the blocks the rule covers, [Start, End); End 0
	// means to the end of the device.
	Start int64 `json:"start,omitempty"`
	End   int64 `json:"end,omitempty"`
	// Count is how many I/Os the rule fires on before it retires; 0 means
	// without limit.
	Count int `json:"count,omitempty"`
	// Prob is the probability that a matching I/O fires the rule; 0 means 1.
	Prob float64 `json:"prob,omitempty"`
	// Delay is how long a FaultDelay rule holds each I/O, and Jitter the
	// most it adds at random.
	Delay  time.Duration `json:"delay,omitempty"`
	Jitter time.Duration `json:"jitter,omitempty"`
	// For is how long the rule stays in force once added; 0 means until
	// it is cleared or its Count is spent.
	For time.Duration `json:"for,omitempty"`
	// Seed, if not 0, reseeds the device's fault generator when the rule
	// is added, so that a run can be repeated exactly.
	Seed uint64 `json:"seed,omitempty"`
}

// Validate reports a rule that cannot work.
func (r Rule) Validate() error {
	switch {
	case int(r.Kind) >= len(kindNames):
		return fmt.Errorf("unknown fault kind %d", r.Kind)
	case r.Start < 0 || (r.End != 0 && r.End <= r.Start):
		return fmt.Errorf("fault range: blocks %d to %d is empty: give a start below the end", r.Start, r.End)
	case r.Count < 0:
		return fmt.Errorf("fault count %d: give 0 (no limit) or more", r.Count)
	case r.Prob < 0 || r.Prob > 1:
		return fmt.Errorf("fault rate %g: give a probability from 0 to 1", r.Prob)
	case r.Delay < 0 || r.Jitter < 0 || r.For < 0:
		return fmt.Errorf("fault durations cannot be negative")
	case r.Kind == FaultDelay && r.Delay == 0 && r.Jitter == 0:
		return fmt.Errorf("a delay fault needs a delay or a jitter (for example 20ms)")
	case r.Ops&(OpRead|OpWrite) == 0 && r.Ops != 0:
		return fmt.Errorf("fault operations %d: use read, write or both", r.Ops)
	}
	if r.Ops == OpRead && (r.Kind == FaultTorn || r.Kind == FaultFull) {
		return fmt.Errorf("a %s fault applies to writes: drop the read-only operation", r.Kind)
	}
	if r.Ops == OpWrite && (r.Kind == FaultFlip || r.Kind == FaultRogue) {
		return fmt.Errorf("a %s fault applies to reads: drop the write-only operation", r.Kind)
	}
	return nil
}

// Normalized returns the rule with its operations filled in when it names
// none: writes for torn and full, reads for flip and rogue, both for the
// others.
func (r Rule) Normalized() Rule {
	if r.Ops == 0 {
		r.Ops = OpRead | OpWrite
		switch r.Kind {
		case FaultTorn, FaultFull:
			r.Ops = OpWrite
		case FaultFlip, FaultRogue:
			r.Ops = OpRead
		}
	}
	return r
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
	if r.Delay > 0 || r.Jitter > 0 {
		fmt.Fprintf(&b, " delay %s", r.Delay)
	}
	if r.Jitter > 0 {
		fmt.Fprintf(&b, "+%s", r.Jitter)
	}
	if r.For > 0 {
		fmt.Fprintf(&b, " for %s", r.For)
	}
	return b.String()
}

// overlaps reports whether the rule covers any of the blocks [first, last).
func (r Rule) overlaps(first, last int64) bool {
	return last > r.Start && (r.End == 0 || first < r.End)
}

// clip returns the blocks of [first, last) that the rule covers.
func (r Rule) clip(first, last int64) (int64, int64) {
	lo, hi := max(first, r.Start), last
	if r.End != 0 {
		hi = min(hi, r.End)
	}
	return lo, hi
}

// Faults are the faults injected into one disk. They outlive any one
// opening of it: a member closed and reopened (a restart) is wrapped again
// with the same Faults, so restarting does not cure a broken disk. Rules
// fire in a reproducible order for a given seed and sequence of I/Os.
type Faults struct {
	// Now is the clock rules expire by; nil means time.Now.
	Now func() time.Time

	active   atomic.Int32 // rules in force, plus one while vanished: 0 is the fast path
	mu       sync.Mutex
	rules    []*activeRule
	rng      *rand.Rand
	vanished bool
	wake     chan struct{} // closed when rules are cleared, to end stalls
}

type activeRule struct {
	Rule
	fired int
	until time.Time // zero without For
}

// ActiveFault is a rule in force, as Faults.Active reports it.
type ActiveFault struct {
	Rule  Rule      `json:"rule"`
	Fired int       `json:"fired"`
	Until time.Time `json:"until,omitzero"`
}

// NewFaults returns an empty set of faults; seed makes probabilistic
// rules, bit positions and tear points reproducible.
func NewFaults(seed uint64) *Faults {
	f := &Faults{wake: make(chan struct{})}
	f.reseed(seed)
	return f
}

func (f *Faults) reseed(seed uint64) {
	f.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func (f *Faults) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// Wrap returns dev with these faults injected into its I/O.
func (f *Faults) Wrap(dev Device) *Faulty { return &Faulty{Faults: f, dev: dev} }

// Add installs a rule after checking it.
func (f *Faults) Add(r Rule) error {
	if err := r.Validate(); err != nil {
		return err
	}
	r = r.Normalized()
	a := &activeRule{Rule: r}
	if r.For > 0 {
		a.until = f.now().Add(r.For)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Seed != 0 {
		f.reseed(r.Seed)
	}
	f.rules = append(f.rules, a)
	f.updateActive()
	return nil
}

// Clear removes every rule, ends stalls, and brings a vanished device
// back.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
	f.vanished = false
	close(f.wake)
	f.wake = make(chan struct{})
	f.updateActive()
}

// Vanished reports whether the device has vanished.
func (f *Faults) Vanished() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.vanished
}

// Rules returns the rules in force.
func (f *Faults) Rules() []Rule {
	var out []Rule
	for _, a := range f.Active() {
		out = append(out, a.Rule)
	}
	return out
}

// Active returns the rules in force with how often each has fired.
func (f *Faults) Active() []ActiveFault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expire(f.now())
	out := make([]ActiveFault, 0, len(f.rules))
	for _, r := range f.rules {
		out = append(out, ActiveFault{Rule: r.Rule, Fired: r.fired, Until: r.until})
	}
	return out
}

// updateActive refreshes the fast-path count. f.mu is held.
func (f *Faults) updateActive() {
	n := len(f.rules)
	if f.vanished {
		n++
	}
	f.active.Store(int32(n))
}

// expire drops rules whose time is up. f.mu is held.
func (f *Faults) expire(now time.Time) {
	kept := f.rules[:0]
	for _, r := range f.rules {
		if r.until.IsZero() || now.Before(r.until) {
			kept = append(kept, r)
		}
	}
	clear(f.rules[len(kept):])
	f.rules = kept
	f.updateActive()
}

// fire returns the rules of the given kind that fire for an I/O of op on the
// blocks [first, last), counting them and retiring exhausted ones.
func (f *Faults) fire(op Op, kind FaultKind, first, last int64) []*activeRule {
	if f.active.Load() == 0 {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expire(f.now())
	var out []*activeRule
	kept := f.rules[:0]
	for _, r := range f.rules {
		if r.Kind == kind && r.Ops&op != 0 && r.overlaps(first, last) &&
			(r.Prob <= 0 || r.Prob >= 1 || f.rng.Float64() < r.Prob) {
			cp := *r
			out = append(out, &cp)
			r.fired++
		}
		if r.Count == 0 || r.fired < r.Count {
			kept = append(kept, r)
		}
	}
	clear(f.rules[len(kept):])
	f.rules = kept
	f.updateActive()
	return out
}

// intn draws from the fault generator.
func (f *Faults) intn(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rng.IntN(n)
}

// vanish marks the device gone.
func (f *Faults) vanish() {
	f.mu.Lock()
	f.vanished = true
	f.updateActive()
	f.mu.Unlock()
}

// gone returns an error if the device has vanished.
func (f *Faults) gone(what string, n int, off int64) error {
	if f.active.Load() == 0 || !f.Vanished() {
		return nil
	}
	return fmt.Errorf("%s %d bytes at %d: %w", what, n, off, ErrVanished)
}

// Faulty is a Device with Faults injected into its I/O.
type Faulty struct {
	*Faults
	dev Device
}

// NewFaulty wraps dev with a new, empty set of faults.
func NewFaulty(dev Device, seed uint64) *Faulty { return NewFaults(seed).Wrap(dev) }

// Size returns the device's size in bytes.
func (f *Faulty) Size() int64 { return f.dev.Size() }

// before applies the rules that act before an I/O of op on [first, last)
// does anything: vanishing, stalls, delays, errors and a full disk.
func (f *Faulty) before(op Op, what string, n int, off int64) error {
	if f.active.Load() == 0 {
		return nil
	}
	first, last := off/BlockSize, (off+int64(n))/BlockSize
	if err := f.gone(what, n, off); err != nil {
		return err
	}
	if hit := f.fire(op, FaultVanish, first, last); hit != nil {
		f.vanish()
		return fmt.Errorf("%s %d bytes at %d (%s): %w", what, n, off, hit[0].Rule, ErrVanished)
	}
	f.stall(op, first, last)
	f.delay(op, first, last)
	if hit := f.fire(op, FaultError, first, last); hit != nil {
		return fmt.Errorf("%s %d bytes at %d (%s): %w", what, n, off, hit[0].Rule, ErrInjected)
	}
	if op == OpWrite {
		if hit := f.fire(op, FaultFull, first, last); hit != nil {
			return fmt.Errorf("%s %d bytes at %d (%s): %w: %w", what, n, off, hit[0].Rule, ErrInjected, syscall.ENOSPC)
		}
	}
	return nil
}

// stall holds an I/O until the rules that stall it expire or are cleared.
func (f *Faulty) stall(op Op, first, last int64) {
	for _, r := range f.fire(op, FaultStall, first, last) {
		f.mu.Lock()
		wake := f.wake
		f.mu.Unlock()
		if r.until.IsZero() {
			<-wake
			continue
		}
		t := time.NewTimer(r.until.Sub(f.now()))
		select {
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// delay holds an I/O for the longest delay rule it matches.
func (f *Faulty) delay(op Op, first, last int64) {
	var d time.Duration
	for _, r := range f.fire(op, FaultDelay, first, last) {
		dr := r.Delay
		if r.Jitter > 0 {
			dr += time.Duration(f.intn(int(r.Jitter)))
		}
		d = max(d, dr)
	}
	if d > 0 {
		time.Sleep(d) // the injected fault itself: a slow disk
	}
}

// flipBit flips one random bit of a block.
func (f *Faulty) flipBit(block []byte) {
	bit := f.intn(BlockSize * 8)
	block[bit/8] ^= 1 << (bit % 8)
}

// ReadAt reads through the rules: an error rule fails the read, a flip rule
// corrupts the blocks it covers in what is returned, a rot rule on the disk.
func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	if err := f.before(OpRead, "read", len(p), off); err != nil {
		return 0, err
	}
	n, err := f.dev.ReadAt(p, off)
	if err != nil || f.active.Load() == 0 {
		return n, err
	}
	first, last := off/BlockSize, (off+int64(len(p)))/BlockSize
	block := func(b int64) []byte { return p[(b-first)*BlockSize : (b-first+1)*BlockSize] }
	for _, r := range f.fire(OpRead, FaultRot, first, last) {
		lo, hi := r.clip(first, last)
		for b := lo; b < hi; b++ {
			f.flipBit(block(b))
			if _, err := f.dev.WriteAt(block(b), b*BlockSize); err != nil {
				return n, err
			}
		}
	}
	for _, r := range f.fire(OpRead, FaultFlip, first, last) {
		lo, hi := r.clip(first, last)
		for b := lo; b < hi; b++ {
			f.flipBit(block(b))
		}
	}
	for _, r := range f.fire(OpRead, FaultRogue, first, last) {
		lo, hi := r.clip(first, last)
		for b := lo; b < hi; b++ {
			// The neighbouring block answers.
			other := b ^ 1
			if (other+1)*BlockSize > f.dev.Size() {
				other = b - 1
			}
			if _, err := f.dev.ReadAt(block(b), other*BlockSize); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// WriteAt writes through the rules: an error or full rule fails the write
// before any of it lands, a rot rule corrupts what lands, a torn rule lands
// part of it and makes the device vanish.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	if err := f.before(OpWrite, "write", len(p), off); err != nil {
		return 0, err
	}
	if f.active.Load() == 0 {
		return f.dev.WriteAt(p, off)
	}
	first, last := off/BlockSize, (off+int64(len(p)))/BlockSize
	if hit := f.fire(OpWrite, FaultTorn, first, last); hit != nil {
		return f.tear(p, off, hit[0].Rule)
	}
	if rot := f.fire(OpWrite, FaultRot, first, last); rot != nil {
		q := AllocAligned(len(p)) // never corrupt the caller's buffer
		copy(q, p)
		for _, r := range rot {
			lo, hi := r.clip(first, last)
			for b := lo; b < hi; b++ {
				f.flipBit(q[(b-first)*BlockSize : (b-first+1)*BlockSize])
			}
		}
		p = q
	}
	return f.dev.WriteAt(p, off)
}

// tear lands a prefix of a write: some whole blocks, then the first half of
// the next one over its old contents. Then the device vanishes.
func (f *Faulty) tear(p []byte, off int64, r Rule) (int, error) {
	f.vanish()
	whole := int64(f.intn(len(p) / BlockSize))
	if whole > 0 {
		if _, err := f.dev.WriteAt(p[:whole*BlockSize], off); err != nil {
			return 0, err
		}
	}
	at := off + whole*BlockSize
	half := AllocAligned(BlockSize)
	if _, err := f.dev.ReadAt(half, at); err != nil {
		return int(whole * BlockSize), err
	}
	copy(half[:BlockSize/2], p[whole*BlockSize:])
	if _, err := f.dev.WriteAt(half, at); err != nil {
		return int(whole * BlockSize), err
	}
	return int(whole * BlockSize), fmt.Errorf("write %d bytes at %d torn after %d blocks and a half (%s): %w",
		len(p), off, whole, r, ErrVanished)
}

// ReadvAt passes a vectored read through in one call while no rule is in
// force, and applies the rules piece by piece otherwise.
func (f *Faulty) ReadvAt(bufs [][]byte, off int64) (int, error) {
	if f.active.Load() == 0 {
		return ReadvAt(f.dev, bufs, off)
	}
	return ReadvAt(struct{ Device }{f}, bufs, off)
}

// WritevAt is ReadvAt's counterpart for writes.
func (f *Faulty) WritevAt(bufs [][]byte, off int64) (int, error) {
	if f.active.Load() == 0 {
		return WritevAt(f.dev, bufs, off)
	}
	return WritevAt(struct{ Device }{f}, bufs, off)
}

// Sync fails once the device has vanished, and passes through otherwise.
func (f *Faulty) Sync() error {
	if err := f.gone("sync", 0, 0); err != nil {
		return err
	}
	return f.dev.Sync()
}

// Close passes through: a vanished device's file is still closed.
func (f *Faulty) Close() error { return f.dev.Close() }
