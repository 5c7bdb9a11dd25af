package raid

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
)

// voting reports whether reads vote: with the vote policy, on a layout that
// has something to vote with.
func (v *Volume) voting() bool {
	return v.readPolicy == ReadVote && (v.geo.Copies > 1 || v.geo.Parity > 0)
}

// votes reports whether a read votes: with the vote policy, or for a
// scrub's tally.
func (v *Volume) votes(t *tally) bool {
	return v.voting() || (t != nil && t.vote && (v.geo.Copies > 1 || v.geo.Parity > 0))
}

// planVote plans a voting read: every copy of each span, or every chunk of
// the stripe over the columns the spans touch. The first copy and data
// chunks that cover those columns read into the request; the rest into
// pooled buffers that finishVote gives back. A patient vote (a scrub's)
// waits for slow members and those sitting out of reads.
func (v *Volume) planVote(s int64, spans []span, patient bool) []memIO {
	g := v.geo
	var ios []memIO
	if g.Parity == 0 {
		for _, sp := range spans {
			for c := range g.Copies {
				buf := sp.buf
				if c > 0 {
					buf = v.getBuf(int64(len(sp.buf)))
				}
				ios = append(ios, memIO{slot: g.Slot(s, sp.d*g.Copies+c), off: s*g.chunk + sp.off, buf: buf, patient: patient})
			}
		}
		return ios
	}
	lo, hi := columns(spans)
	for i := range g.Members {
		var buf []byte
		for _, sp := range spans {
			if sp.d == i && sp.off == lo && sp.end() == hi {
				buf = sp.buf
			}
		}
		if buf == nil {
			buf = v.getBuf(hi - lo)
		}
		ios = append(ios, memIO{slot: g.Slot(s, i), off: s*g.chunk + lo, buf: buf, patient: patient})
	}
	return ios
}

// columns returns the chunk offsets [lo, hi) that the spans cover.
func columns(spans []span) (lo, hi int64) {
	lo = spans[0].off
	for _, sp := range spans {
		lo, hi = min(lo, sp.off), max(hi, sp.end())
	}
	return lo, hi
}

// hasContent reports whether a read filled its buffer: it succeeded, or
// only its checksums failed.
func hasContent(err error) bool { return err == nil || errors.Is(err, blockdev.ErrChecksum) }

// mismatch counts a block that lost a vote against its member.
func (v *Volume) mismatch(slot int) {
	v.members[slot].ctr.checksum.Add(1)
	v.report(slot, func(p *Policy, now time.Time) []Action { return p.Mismatch(slot, now) })
}

// finishVote decides each block of a voting read and repairs the losers.
func (v *Volume) finishVote(s int64, spans []span, ios []memIO, t *tally) error {
	if v.geo.Parity > 0 {
		return v.finishParityVote(s, spans, ios, t)
	}
	g := v.geo
	var errs []error
	var repairs []memIO
	for i, sp := range spans {
		copies := ios[i*g.Copies : (i+1)*g.Copies]
		nb := len(sp.buf) / bs
		bad := make([][]bool, g.Copies)
		for c, io := range copies {
			bad[c] = badBlocks(io.err, nb)
		}
		fix := make([][]bool, g.Copies)
		for c := range fix {
			fix[c] = make([]bool, nb)
		}
		for b := range nb {
			blk := func(c int) []byte { return copies[c].buf[b*bs : (b+1)*bs] }
			proven := func(c int) bool { return hasContent(copies[c].err) && (bad[c] == nil || !bad[c][b]) }
			// Group the copies that have contents by those contents.
			var groups [][]int
			for c := range copies {
				if !hasContent(copies[c].err) {
					continue
				}
				placed := false
				for k, grp := range groups {
					if bytes.Equal(blk(grp[0]), blk(c)) {
						groups[k], placed = append(grp, c), true
						break
					}
				}
				if !placed {
					groups = append(groups, []int{c})
				}
			}
			winner := -1
			for k, grp := range groups {
				if g.Copies >= 3 && 2*len(grp) > g.Copies {
					winner = k // a majority of identical contents
				}
			}
			if winner < 0 {
				for k, grp := range groups {
					for _, c := range grp {
						if proven(c) && (winner < 0 || len(grp) > len(groups[winner])) {
							winner = k // the checksum arbitrates
						}
					}
				}
			}
			if winner < 0 {
				errs = append(errs, v.lose(t, s, sp.d, sp.off+int64(b)*bs, bs, "no majority of the copies agree and none passes its checksum"))
				continue
			}
			w := groups[winner][0]
			if w != 0 {
				copy(blk(0), blk(w))
			}
			for c := range copies {
				inWinner := false
				for _, x := range groups[winner] {
					inWinner = inWinner || x == c
				}
				if !inWinner && hasContent(copies[c].err) && proven(c) {
					v.mismatch(copies[c].slot) // it passed its checksum yet lost the vote
				}
				fix[c][b] = !inWinner || !proven(c)
			}
		}
		for c, io := range copies {
			if io.err == errMissing {
				continue // not read: nothing was found bad on it
			}
			for _, r := range runs(fix[c]) {
				repairs = append(repairs, memIO{slot: io.slot, off: io.off + int64(r[0])*bs, buf: sp.buf[r[0]*bs : r[1]*bs]})
			}
		}
	}
	v.repair(repairs, t)
	for i := range spans {
		for c := 1; c < g.Copies; c++ {
			v.putBuf(ios[i*g.Copies+c].buf)
		}
	}
	return errors.Join(errs...)
}

// finishParityVote checks every block column of the stripe read against its
// parity. Chunks that fail their checksums are rebuilt; a column whose
// chunks all pass their checksums but disagree with the parity is searched
// for the one chunk that, rebuilt from the others, makes it agree (possible
// with two or more parity chunks); failing that, the data chunks, proven by
// their checksums, stand and the parity is recomputed. Every chunk found bad
// is repaired in place.
func (v *Volume) finishParityVote(s int64, spans []span, ios []memIO, t *tally) error {
	g := v.geo
	n := g.Members
	lo, hi := columns(spans)
	nb := int((hi - lo) / bs)
	bad := make([][]bool, n)
	for i, io := range ios {
		if bad[i] = badBlocks(io.err, nb); bad[i] == nil {
			bad[i] = make([]bool, nb)
		}
	}
	wanted := func(i int, c0 int64) bool {
		for _, sp := range spans {
			if sp.d == i && sp.off <= c0 && sp.end() > c0 {
				return true
			}
		}
		return false
	}
	var errs []error
	var repairs []memIO
	scratch := make([][]byte, n)
	clean := true
	full := make([][]byte, n)
	for i, io := range ios {
		clean = clean && io.err == nil
		full[i] = io.buf
	}
	if clean && v.verify(full) {
		nb = 0 // every chunk proven and the parity agrees: nothing to look at block by block
	}
	for b := range nb {
		c0 := lo + int64(b)*bs
		col := make([][]byte, n)
		erased := 0
		for i := range n {
			col[i] = ios[i].buf[b*bs : (b+1)*bs]
			if bad[i][b] {
				col[i] = col[i][:0]
				erased++
			}
		}
		switch {
		case erased > g.Parity:
			for i := range g.Data {
				if bad[i][b] && wanted(i, c0) {
					errs = append(errs, v.lose(t, s, i, c0, bs, fmt.Sprintf("%d chunks of the stripe are bad here, more than its %d parity", erased, g.Parity)))
				}
			}
			continue
		case erased > 0:
			if err := v.codec.Reconstruct(col); err != nil {
				errs = append(errs, v.unrecoverable(s, 0, c0, err.Error()))
				continue
			}
			for i := range n {
				if bad[i][b] && ios[i].err != errMissing {
					repairs = append(repairs, memIO{slot: ios[i].slot, off: ios[i].off + int64(b)*bs, buf: col[i]})
				}
			}
			continue
		}
		if v.verify(col) {
			continue
		}
		culprit := -1
		if g.Parity >= 2 {
			for i := range n {
				trial := make([][]byte, n)
				copy(trial, col)
				if scratch[i] == nil {
					scratch[i] = make([]byte, bs)
				}
				trial[i] = scratch[i][:0]
				if v.codec.Reconstruct(trial) != nil {
					continue
				}
				if v.verify(trial) {
					if culprit == -1 {
						culprit = i
					} else {
						culprit = -2
					}
				}
			}
		}
		if culprit >= 0 {
			copy(col[culprit], scratch[culprit])
			v.mismatch(ios[culprit].slot)
			repairs = append(repairs, memIO{slot: ios[culprit].slot, off: ios[culprit].off + int64(b)*bs, buf: col[culprit]})
			continue
		}
		// The parity cannot say which chunk is wrong; the data chunks
		// passed their checksums, so they stand and the parity follows.
		if err := v.codec.Encode(col); err != nil {
			errs = append(errs, v.unrecoverable(s, 0, c0, err.Error()))
			continue
		}
		for i := g.Data; i < n; i++ {
			v.mismatch(ios[i].slot)
			repairs = append(repairs, memIO{slot: ios[i].slot, off: ios[i].off + int64(b)*bs, buf: col[i]})
		}
	}
	v.repair(repairs, t)
	for _, sp := range spans {
		if buf := ios[sp.d].buf; &buf[0] != &sp.buf[0] {
			copy(sp.buf, buf[sp.off-lo:])
		}
	}
	for i, io := range ios {
		if i >= g.Data || !aliases(spans, i, io.buf) {
			v.putBuf(io.buf)
		}
	}
	return errors.Join(errs...)
}

// verify reports whether the parity shards agree with the data shards, all
// of one length. It computes the parity into pooled buffers: the codec's own
// Verify allocates them on every call, which at a scrub's rate is hundreds
// of MB/s of fresh memory (slow to touch, PERF.md says, and work for the
// collector).
func (v *Volume) verify(shards [][]byte) bool {
	g := v.geo
	n := int64(len(shards[0]))
	trial := slices.Clone(shards)
	for i := g.Data; i < g.Members; i++ {
		trial[i] = v.getBuf(n)
	}
	defer v.putBuf(trial[g.Data:]...)
	if v.codec.Encode(trial) != nil {
		return false
	}
	for i := g.Data; i < g.Members; i++ {
		if !bytes.Equal(trial[i], shards[i]) {
			return false
		}
	}
	return true
}

// aliases reports whether buf is the buffer of data chunk d's span.
func aliases(spans []span, d int, buf []byte) bool {
	for _, sp := range spans {
		if sp.d == d && &sp.buf[0] == &buf[0] {
			return true
		}
	}
	return false
}
