package raid

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/lockstepfs/lockstep/blockdev"
)

// A rebuild or scrub that meets data beyond redundancy does not stop: it
// records the lost range, and reads of it fail with ErrUnrecoverable until
// a write replaces it. The ranges are kept in every member's metadata under
// prefixLost, keyed by volume offset, valued by length.
var prefixLost = []byte("lost/")

// lostSet is the volume's lost ranges: sorted, disjoint, not adjacent.
type lostSet struct {
	mu  sync.Mutex
	ext []Extent
	n   atomic.Int32 // len(ext), for a lock-free check on the I/O path
}

// load reads the lost ranges every member records.
func (l *lostSet) load(members []*member) error {
	var all []Extent
	for _, m := range members {
		if m == nil {
			continue
		}
		err := m.m.Meta.Scan(prefixLost, func(k, val []byte) error {
			if len(k) != len(prefixLost)+8 || len(val) != 8 {
				return fmt.Errorf("%w: malformed lost range record", ErrCorruptLabel)
			}
			all = append(all, Extent{Off: int64(binary.BigEndian.Uint64(k[len(prefixLost):])), Len: int64(binary.BigEndian.Uint64(val))})
			return nil
		})
		if err != nil {
			return fmt.Errorf("member %d lost ranges: %w", m.slot, err)
		}
	}
	l.ext = mergeExtents(all)
	l.n.Store(int32(len(l.ext)))
	return nil
}

// mergeExtents sorts extents and merges those that overlap or touch.
func mergeExtents(ext []Extent) []Extent {
	slices.SortFunc(ext, func(a, b Extent) int { return int(a.Off - b.Off) })
	var out []Extent
	for _, e := range ext {
		if k := len(out) - 1; k >= 0 && e.Off <= out[k].end() {
			out[k].Len = max(out[k].end(), e.end()) - out[k].Off
			continue
		}
		out = append(out, e)
	}
	return out
}

// uncovered returns the parts of ext that known (sorted, disjoint) does
// not cover.
func uncovered(ext, known []Extent) []Extent {
	var out []Extent
	for _, e := range ext {
		for _, k := range known {
			if k.end() <= e.Off || k.Off >= e.end() {
				continue
			}
			if k.Off > e.Off {
				out = append(out, Extent{Off: e.Off, Len: k.Off - e.Off})
			}
			e = Extent{Off: k.end(), Len: max(0, e.end()-k.end())}
		}
		if e.Len > 0 {
			out = append(out, e)
		}
	}
	return out
}

// overlap returns the first lost range that [off, off+n) touches.
func (l *lostSet) overlap(off, n int64) (Extent, bool) {
	if l.n.Load() == 0 {
		return Extent{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ext {
		if e.Off < off+n && off < e.end() {
			return e, true
		}
	}
	return Extent{}, false
}

// list returns the lost ranges.
func (l *lostSet) list() []Extent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ext)
}

// Lost returns the ranges of the volume found beyond redundancy by a
// rebuild or scrub and not written since: reads of them fail.
func (v *Volume) Lost() []Extent { return v.lost.list() }

// addLost records ranges as lost, in memory and in every member that takes
// writes, synced, with an event.
func (v *Volume) addLost(ext []Extent, by string) error {
	if len(ext) == 0 {
		return nil
	}
	v.lost.mu.Lock()
	old := v.lost.ext
	ext = uncovered(ext, old)
	if len(ext) == 0 {
		v.lost.mu.Unlock()
		return nil // known already
	}
	v.lost.ext = mergeExtents(append(slices.Clone(old), ext...))
	v.lost.n.Store(int32(len(v.lost.ext)))
	err := v.storeLost(old, v.lost.ext)
	v.lost.mu.Unlock()
	var total int64
	for _, e := range ext {
		total += e.Len
	}
	reason := fmt.Sprintf("%s found %s in %d range(s) beyond redundancy, first %s: reads of them fail until they are written", by, FormatSize(total), len(ext), ext[0])
	v.log.Error("data lost", "by", by, "bytes", total, "ranges", len(ext), "first", ext[0].String())
	return errors.Join(err, v.record(Event{Time: v.now(), Slot: -1, Kind: "lost", Reason: reason}, false))
}

// clearLost forgets the lost ranges within [off, off+n), which a write has
// just replaced.
func (v *Volume) clearLost(off, n int64) error {
	if v.lost.n.Load() == 0 {
		return nil
	}
	v.lost.mu.Lock()
	defer v.lost.mu.Unlock()
	old := v.lost.ext
	var kept []Extent
	for _, e := range old {
		if e.end() <= off || e.Off >= off+n {
			kept = append(kept, e)
			continue
		}
		if e.Off < off {
			kept = append(kept, Extent{Off: e.Off, Len: off - e.Off})
		}
		if e.end() > off+n {
			kept = append(kept, Extent{Off: off + n, Len: e.end() - off - n})
		}
	}
	if slices.Equal(kept, old) {
		return nil
	}
	v.lost.ext = kept
	v.lost.n.Store(int32(len(kept)))
	return v.storeLost(old, kept)
}

// storeLost replaces the lost ranges old by now in the members' metadata.
// v.lost.mu is held.
func (v *Volume) storeLost(old, now []Extent) error {
	return v.commitAll("record lost ranges", true, func(b *blockdev.Batch) {
		for _, e := range old {
			b.Delete(lostKey(e.Off))
		}
		for _, e := range now {
			b.Set(lostKey(e.Off), binary.BigEndian.AppendUint64(nil, uint64(e.Len)))
		}
	})
}

func lostKey(off int64) []byte { return regionKey(prefixLost, off) }
