package raid

import (
	"fmt"
	"sync"
)

// tally collects what a background job's reads find: the blocks found bad
// and repaired on each member, and the data that could not be recovered. A
// nil tally (a foreground read) collects nothing.
type tally struct {
	vote  bool // read every copy or chunk and check them against each other
	check bool // find, but do not repair

	mu        sync.Mutex // finishRead runs stripes in parallel
	bad, done []int64    // blocks found bad, and repaired, by slot
	lost      []lostRun
}

// lostRun is a run of blocks of one data chunk that no redundancy could
// recover.
type lostRun struct {
	s      int64
	d      int
	off, n int64 // within the chunk
}

func newTally(members int, vote, check bool) *tally {
	return &tally{vote: vote, check: check, bad: make([]int64, members), done: make([]int64, members)}
}

// found counts the blocks of repair writes as found bad on their members.
func (t *tally) found(ios []memIO) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, io := range ios {
		t.bad[io.slot] += int64(len(io.buf) / bs)
	}
}

// repaired counts the blocks of the repair writes that succeeded.
func (t *tally) repaired(ios []memIO) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, io := range ios {
		if io.err == nil {
			t.done[io.slot] += int64(len(io.buf) / bs)
		}
	}
}

// lose records n bytes of data chunk d of stripe s, from off, as beyond
// redundancy (in the tally, if any) and returns the read's error.
func (v *Volume) lose(t *tally, s int64, d int, off, n int64, why string) error {
	if t != nil {
		t.mu.Lock()
		if k := len(t.lost) - 1; k >= 0 && t.lost[k].s == s && t.lost[k].d == d && t.lost[k].off+t.lost[k].n == off {
			t.lost[k].n += n
		} else {
			t.lost = append(t.lost, lostRun{s: s, d: d, off: off, n: n})
		}
		t.mu.Unlock()
	}
	return v.unrecoverable(s, d, off, why)
}

// extents turns the tally's lost runs into volume extents, within the
// volume.
func (t *tally) extents(g geometry) []Extent {
	var out []Extent
	for _, r := range t.lost {
		off := r.s*g.stripeData() + int64(r.d)*g.chunk + r.off
		if off >= g.size {
			continue
		}
		out = append(out, Extent{Off: off, Len: min(r.n, g.size-off)})
	}
	return out
}

// Extent is a range of the volume.
type Extent struct {
	Off int64 `json:"offset"`
	Len int64 `json:"length"`
}

func (e Extent) end() int64 { return e.Off + e.Len }

func (e Extent) String() string { return fmt.Sprintf("%d+%d", e.Off, e.Len) }
