package raid

import (
	"errors"
	"fmt"
	"slices"
)

// finishParity rebuilds the blocks that the data-chunk reads ios could not
// prove from the rest of the stripe, with Reed-Solomon.
func (v *Volume) finishParity(s int64, spans []span, ios []memIO, t *tally) error {
	g := v.geo
	bads := make([][]bool, len(spans))
	lo, hi := g.chunk, int64(0)
	for i, sp := range spans {
		if bads[i] = badBlocks(ios[i].err, len(sp.buf)/bs); bads[i] == nil {
			bads[i] = make([]bool, len(sp.buf)/bs)
		}
		for _, r := range runs(bads[i]) {
			lo = min(lo, sp.off+int64(r[0])*bs)
			hi = max(hi, sp.off+int64(r[1])*bs)
		}
	}
	if hi == 0 {
		return nil
	}
	skipped := make([]bool, g.Members)
	for i, sp := range spans {
		skipped[sp.d] = skipped[sp.d] || ios[i].err == errMissing
	}
	return v.reconstruct(s, spans, bads, skipped, lo, hi, t)
}

// reconstruct serves the bad blocks of spans (bads[i] marks those of
// spans[i]) from the whole stripe over the columns [lo, hi). It reads every
// other shard over those columns, reusing a span's buffer where it covers
// them, and decodes column run by column run, since each run of blocks can
// have its own set of bad shards.
// skipped marks the shards whose members were not read at all (gone,
// fenced, too slow): they are rebuilt but not repaired.
func (v *Volume) reconstruct(s int64, spans []span, bads [][]bool, skipped []bool, lo, hi int64, t *tally) error {
	g := v.geo
	n, nb := g.Members, int((hi-lo)/bs)
	shards := make([][]byte, n)
	bad := make([][]bool, n)
	aliased := make([]bool, n)
	for j, sp := range spans {
		if sp.off <= lo && sp.end() >= hi {
			shards[sp.d] = sp.buf[lo-sp.off : hi-sp.off]
			bad[sp.d] = bads[j][(lo-sp.off)/bs : (hi-sp.off)/bs]
			aliased[sp.d] = true
		}
	}
	var ios []memIO
	var owned [][]byte
	var ioShard []int
	for i := range n {
		if shards[i] == nil {
			shards[i] = v.getBuf(hi - lo)
			owned = append(owned, shards[i])
			ios = append(ios, memIO{slot: g.Slot(s, i), off: s*g.chunk + lo, buf: shards[i]})
			ioShard = append(ioShard, i)
		}
	}
	defer v.putBuf(owned...)
	// Data chunks suffice: parity shards beyond what the chunks known bad
	// need are read only if a first read fails.
	spare := g.Parity
	for i := range n {
		if aliased[i] && anyTrue(bad[i]) {
			spare--
		}
	}
	first := len(ios)
	for first > 0 && spare > 0 && ioShard[first-1] >= g.Data {
		first--
		spare--
	}
	v.do(ios[:first], false)
	if first < len(ios) {
		failed := false
		for _, io := range ios[:first] {
			failed = failed || io.err != nil
		}
		if failed {
			v.do(ios[first:], false)
		} else {
			for k := range ios[first:] {
				ios[first+k].err = errMissing // not needed: left unread, and unrepaired
			}
		}
	}
	lost := 0
	for i := range n {
		if !aliased[i] || anyTrue(bad[i]) {
			lost++
		}
	}
	for _, io := range ios {
		if io.err == nil {
			lost--
		}
	}
	if lost > g.Parity {
		// Too few answered: wait for the members kept out of reads, for
		// the shards read here and for the request's own chunks.
		v.lastResort(ios)
		for j, sp := range spans {
			if !aliased[sp.d] || !skipped[sp.d] {
				continue
			}
			again := []memIO{{slot: g.Slot(s, sp.d), off: s*g.chunk + lo, buf: shards[sp.d], err: errMissing}}
			v.lastResort(again)
			if again[0].err == errMissing {
				continue
			}
			skipped[sp.d] = false
			still := badBlocks(again[0].err, nb)
			for b := range nb {
				bads[j][(lo-sp.off)/bs+int64(b)] = still != nil && still[b]
			}
		}
	}
	for k, io := range ios {
		bad[ioShard[k]] = badBlocks(io.err, nb)
		skipped[ioShard[k]] = io.err == errMissing
	}
	for i := range bad {
		if bad[i] == nil {
			bad[i] = make([]bool, nb)
		}
	}
	// A span that does not cover the columns had its chunk read again
	// here, whole. Where that read proves blocks the first one did not (the
	// member answered this time, or a scrub repaired them in between),
	// they come from it: only the blocks still bad are decoded below.
	for j, sp := range spans {
		if aliased[sp.d] {
			continue
		}
		for k := range bads[j] {
			c := sp.off + int64(k)*bs
			if bads[j][k] && !bad[sp.d][(c-lo)/bs] {
				copy(sp.buf[c-sp.off:c-sp.off+bs], shards[sp.d][c-lo:])
				bads[j][k] = false
			}
		}
	}
	var errs []error
	var repairs []memIO
	erased := func(b int) []bool {
		e := make([]bool, n)
		for i := range n {
			e[i] = bad[i][b]
		}
		return e
	}
	for b0 := 0; b0 < nb; {
		set := erased(b0)
		b1 := b0 + 1
		for b1 < nb && slices.Equal(erased(b1), set) {
			b1++
		}
		c0, c1 := lo+int64(b0)*bs, lo+int64(b1)*bs
		need := make([]bool, g.Data)
		wanted, count := false, 0
		for i, e := range set {
			if e {
				count++
			}
			if e && i < g.Data {
				for j, sp := range spans {
					if sp.d == i && sp.off < c1 && sp.end() > c0 && anyTrue(clip(bads[j], sp.off, c0, c1)) {
						need[i], wanted = true, true
					}
				}
			}
		}
		if wanted && count > g.Parity {
			for d, lost := range need {
				if lost {
					errs = append(errs, v.lose(t, s, d, c0, c1-c0,
						fmt.Sprintf("%d chunks of the stripe are bad at this offset, more than its %d parity", count, g.Parity)))
				}
			}
		} else if wanted {
			sub := make([][]byte, n)
			for i := range n {
				if set[i] {
					sub[i] = shards[i][c0-lo : c0-lo : c1-lo]
				} else {
					sub[i] = shards[i][c0-lo : c1-lo]
				}
			}
			// Rebuild every bad chunk, not only those asked for, so that
			// all of them can be repaired in place.
			if err := v.codec.Reconstruct(sub); err != nil {
				errs = append(errs, v.unrecoverable(s, firstTrue(need), c0, err.Error()))
			} else {
				for i := range n {
					if set[i] && !skipped[i] {
						repairs = append(repairs, memIO{slot: g.Slot(s, i), off: s*g.chunk + c0, buf: sub[i]})
					}
				}
				for j, sp := range spans {
					if !need[sp.d] {
						continue
					}
					for c := max(c0, sp.off); c < min(c1, sp.end()); c += bs {
						k := (c - sp.off) / bs
						if bads[j][k] && !aliased[sp.d] {
							copy(sp.buf[c-sp.off:c-sp.off+bs], shards[sp.d][c-lo:])
						}
						bads[j][k] = false
					}
				}
			}
		}
		b0 = b1
	}
	v.repair(repairs, t)
	return errors.Join(errs...)
}

// clip returns the part of a span's block marks that falls in [c0, c1).
func clip(marks []bool, spanOff, c0, c1 int64) []bool {
	from := max(c0, spanOff)
	to := min(c1, spanOff+int64(len(marks))*bs)
	if from >= to {
		return nil
	}
	return marks[(from-spanOff)/bs : (to-spanOff)/bs]
}

// firstTrue returns the index of the first true element, or 0.
func firstTrue(b []bool) int {
	return max(slices.Index(b, true), 0)
}
