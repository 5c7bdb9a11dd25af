package raid

import (
	"errors"
	"fmt"
	"sync"

	"github.com/lockstepfs/lockstep/blockdev"
)

const bs = blockdev.BlockSize

// errMissing stands for the I/O of a member that is not there.
var errMissing = errors.New("member missing")

// span is the part of a request that falls in one data chunk of a stripe.
type span struct {
	d   int    // data chunk index in the stripe
	off int64  // offset in the chunk
	buf []byte // the request's bytes
}

func (sp span) end() int64 { return sp.off + int64(len(sp.buf)) }

// memIO is one member read or write of a request.
type memIO struct {
	slot int
	off  int64 // member offset
	buf  []byte
	err  error
}

// do runs member I/Os in parallel and counts their errors against their
// members.
func (v *Volume) do(ios []memIO, write bool) {
	one := func(io *memIO) {
		m := v.members[io.slot]
		if m == nil {
			io.err = errMissing
			return
		}
		if write {
			_, io.err = m.dev.WriteAt(io.buf, io.off)
		} else {
			_, io.err = m.dev.ReadAt(io.buf, io.off)
		}
		switch {
		case io.err == nil:
		case errors.Is(io.err, blockdev.ErrChecksum):
			m.checksumErrors.Add(1)
		case write:
			m.writeErrors.Add(1)
		default:
			m.readErrors.Add(1)
		}
	}
	if len(ios) == 1 {
		one(&ios[0])
		return
	}
	var wg sync.WaitGroup
	for i := range ios {
		wg.Go(func() { one(&ios[i]) })
	}
	wg.Wait()
}

// badBlocks turns the error of an n-block member read into the blocks it
// leaves unproven: none, those a checksum error lists, or all.
func badBlocks(err error, n int) []bool {
	if err == nil {
		return nil
	}
	bad := make([]bool, n)
	var ce *blockdev.ChecksumError
	if errors.As(err, &ce) {
		for _, b := range ce.Blocks {
			bad[b] = true
		}
		return bad
	}
	for i := range bad {
		bad[i] = true
	}
	return bad
}

// forStripes cuts a request into stripes and runs each under its stripe lock,
// in parallel.
func (v *Volume) forStripes(p []byte, off int64, write bool) error {
	type job struct {
		s     int64
		spans []span
	}
	var jobs []job
	for _, e := range v.geo.extents(off, int64(len(p))) {
		if len(jobs) == 0 || jobs[len(jobs)-1].s != e.stripe {
			jobs = append(jobs, job{s: e.stripe})
		}
		j := &jobs[len(jobs)-1]
		j.spans = append(j.spans, span{d: e.d, off: e.off, buf: p[e.pos : e.pos+e.n]})
	}
	run := func(j job) error {
		unlock := v.locks.lock(j.s, write)
		defer unlock()
		if write {
			return v.writeStripe(j.s, j.spans)
		}
		return v.readStripe(j.s, j.spans)
	}
	if len(jobs) == 1 {
		return run(jobs[0])
	}
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() { errs[i] = run(j) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// alignSpan widens sp to whole blocks. It returns the aligned span (sharing
// sp's buffer when already aligned) and whether a pooled buffer was taken.
func (v *Volume) alignSpan(sp span) (span, bool) {
	lo := sp.off / bs * bs
	hi := (sp.end() + bs - 1) / bs * bs
	if lo == sp.off && hi == sp.end() {
		return sp, false
	}
	return span{d: sp.d, off: lo, buf: v.getBuf(hi - lo)}, true
}

// readStripe serves the read spans of stripe s; the stripe is locked.
func (v *Volume) readStripe(s int64, spans []span) error {
	aligned := make([]span, len(spans))
	var bounced []int
	for i, sp := range spans {
		var b bool
		aligned[i], b = v.alignSpan(sp)
		if b {
			bounced = append(bounced, i)
		}
	}
	err := v.readSpans(s, aligned)
	for _, i := range bounced {
		copy(spans[i].buf, aligned[i].buf[spans[i].off-aligned[i].off:])
		v.putBuf(aligned[i].buf)
	}
	return err
}

// readSpans reads block-aligned spans of stripe s into their buffers,
// proving every block by its checksum and serving from redundancy what
// cannot be proven.
func (v *Volume) readSpans(s int64, spans []span) error {
	if v.geo.Parity > 0 {
		return v.readParity(s, spans)
	}
	return v.readMirror(s, spans)
}

// unrecoverable describes the blocks of stripe s, data chunk d, that could
// not be served.
func (v *Volume) unrecoverable(s int64, d int, off int64, why string) error {
	return fmt.Errorf("%w: volume offset %d (stripe %d, chunk %d): %s",
		ErrUnrecoverable, s*v.geo.stripeData()+int64(d)*v.geo.chunk+off, s, d, why)
}

// readMirror reads each span from one copy and fetches the blocks that fail
// from the other copies, block by block.
func (v *Volume) readMirror(s int64, spans []span) error {
	g := v.geo
	first := make([]int, len(spans))
	ios := make([]memIO, len(spans))
	for i, sp := range spans {
		first[i] = v.pickCopy(s, sp.d)
		ios[i] = memIO{slot: g.Slot(s, sp.d*g.Copies+first[i]), off: s*g.chunk + sp.off, buf: sp.buf}
	}
	v.do(ios, false)
	var errs []error
	for i, sp := range spans {
		bad := badBlocks(ios[i].err, len(sp.buf)/bs)
		for k := 1; k < g.Copies && anyTrue(bad); k++ {
			slot := g.Slot(s, sp.d*g.Copies+(first[i]+k)%g.Copies)
			for _, r := range runs(bad) {
				io := []memIO{{slot: slot, off: s*g.chunk + sp.off + int64(r[0])*bs, buf: sp.buf[r[0]*bs : r[1]*bs]}}
				v.do(io, false)
				still := badBlocks(io[0].err, r[1]-r[0])
				for b := r[0]; b < r[1]; b++ {
					bad[b] = still != nil && still[b-r[0]]
				}
			}
		}
		if r := runs(bad); r != nil {
			errs = append(errs, v.unrecoverable(s, sp.d, sp.off+int64(r[0][0])*bs, "no copy of the block passes its checksum"))
		}
	}
	return errors.Join(errs...)
}

// pickCopy chooses the copy of data chunk d of stripe s to read first:
// rotating by stripe spreads reads over the copies; missing members are
// skipped.
func (v *Volume) pickCopy(s int64, d int) int {
	g := v.geo
	start := int((s + int64(d)) % int64(g.Copies))
	for k := range g.Copies {
		c := (start + k) % g.Copies
		if v.members[g.Slot(s, d*g.Copies+c)] != nil {
			return c
		}
	}
	return start
}

// anyTrue reports whether any element is true.
func anyTrue(b []bool) bool {
	for _, x := range b {
		if x {
			return true
		}
	}
	return false
}

// runs returns the maximal runs [from, to) of true elements.
func runs(b []bool) [][2]int {
	var out [][2]int
	for i := 0; i < len(b); i++ {
		if b[i] {
			j := i
			for j < len(b) && b[j] {
				j++
			}
			out = append(out, [2]int{i, j})
			i = j
		}
	}
	return out
}
