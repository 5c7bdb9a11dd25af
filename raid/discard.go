package raid

import (
	"errors"
	"fmt"
)

// discardBatch is how many stripes a discard locks and forgets at a time, so
// that discarding a whole volume neither holds every stripe lock at once nor
// piles up changed checksum pages.
const discardBatch = 256

// Discard makes the n bytes at volume offset off read as zeros (a punched
// hole, a TRIM). Every member forgets the whole stripes in the range: their
// chunks are punched out of the data files and their checksums reset, which
// keeps parity right since the parity of zeros is zero. The ragged ends are
// written with zeros. Like a write, it is durable after the next Flush.
func (v *Volume) Discard(off, n int64) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := v.admit("discard", int(n), off); err != nil {
		return err
	}
	if off < 0 || n < 0 || off+n > v.geo.size {
		return fmt.Errorf("%w: discard of %d bytes at %d, volume size %d", ErrOutOfRange, n, off, v.geo.size)
	}
	sd := v.geo.stripeData()
	first, last := (off+sd-1)/sd, (off+n)/sd
	if off+n == v.geo.size {
		last = v.geo.stripes // the tail of the last stripe lies beyond the volume and is never written
	}
	var err error
	if first >= last {
		err = v.writeZeros(off, n)
	} else {
		// Regions emptied whole leave the written set: a rebuild or
		// scrub passes them by.
		rs := v.intent.stripes
		var whole []int64
		for r := (first + rs - 1) / rs; r*rs < last && ((r+1)*rs <= last || last == v.geo.stripes); r++ {
			whole = append(whole, r)
		}
		snap := v.intent.beganCounts(whole)
		own := map[int64]uint64{}
		err = errors.Join(v.writeZeros(off, first*sd-off), v.forget(first, last, own), v.writeZeros(last*sd, min(off+n-last*sd, v.geo.size-last*sd)))
		if err == nil {
			err = v.intent.forgetWritten(whole, snap, own)
		}
	}
	if err != nil {
		return err
	}
	return v.clearLost(off, n)
}

// writeZeros writes zeros over n bytes at off, a stripe at most at a time.
func (v *Volume) writeZeros(off, n int64) error {
	if n <= 0 {
		return nil
	}
	zeros := make([]byte, min(n, v.geo.stripeData()))
	for done := int64(0); done < n; {
		m := min(n-done, int64(len(zeros)))
		if err := v.forStripes(zeros[:m], off+done, true); err != nil {
			return err
		}
		done += m
	}
	return nil
}

// forget has every member forget stripes [first, last), a batch at a time
// under the batch's stripe locks. It fails if too few members forgot a batch
// for its data to read as zeros.
func (v *Volume) forget(first, last int64, own map[int64]uint64) error {
	g := v.geo
	for s0 := first; s0 < last; s0 += discardBatch {
		s1 := min(s0+discardBatch, last)
		regions := v.intent.regionsOf(s0, s1-1)
		for _, r := range regions {
			own[r]++
		}
		if err := v.intent.begin(regions); err != nil {
			return err
		}
		unlocks := make([]func(), 0, s1-s0)
		for s := s0; s < s1; s++ {
			unlocks = append(unlocks, v.locks.lock(s, true))
		}
		ios := make([]memIO, g.Members)
		parallel(len(ios), func(slot int) {
			ios[slot] = memIO{slot: slot, off: s0 * g.chunk, forget: (s1 - s0) * g.chunk}
			v.doGroup([]*memIO{&ios[slot]}, true)
		})
		for _, u := range unlocks {
			u()
		}
		v.intent.end(regions)
		ok := make([]bool, len(ios))
		var errs []error
		for slot, io := range ios {
			ok[slot] = io.err == nil
			if io.err != nil && io.err != errMissing {
				errs = append(errs, fmt.Errorf("member %d: %w", slot, io.err))
			}
		}
		if !g.Survives(ok) {
			return v.unrecoverable(s0, 0, 0, fmt.Sprintf("too few members forgot stripes %d to %d: %v", s0, s1-1, errors.Join(errs...)))
		}
	}
	return nil
}
