package raid

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	// forget, for a discard (buf nil), is how many bytes from off the
	// member forgets.
	forget int64
	// patient marks a read that must see the member's data, however slow
	// the member is and even while it sits out of reads: a scrub's, which
	// would otherwise call blocks verified that it never read. Like a bulk
	// read it is not timed.
	patient bool
	// own marks a write of a rebuild to the member it rebuilds, which the
	// member's source does not take.
	own bool
	// bulk marks a rebuild's read: it queues behind the rebuild's other
	// large reads, so its latency says nothing of the member's health and
	// is not held against it as slow. A scrub's reads are patient, and
	// untimed for the same reason.
	bulk bool
	err  error
}

// maxIOV is the most buffers one vectored member I/O carries (Linux's
// IOV_MAX).
const maxIOV = 1024

// do runs member I/Os in parallel. I/Os to one member at adjacent offsets
// are merged into one vectored call, so that a request spanning several
// stripes costs each member one system call, not one per chunk. Errors are
// counted against their members and handed back to each I/O, a checksum
// error only to the I/Os whose blocks failed.
func (v *Volume) do(ios []memIO, write bool) {
	order := make([]*memIO, len(ios))
	for i := range ios {
		order[i] = &ios[i]
	}
	slices.SortFunc(order, func(a, b *memIO) int {
		if a.slot != b.slot {
			return a.slot - b.slot
		}
		return int(a.off - b.off)
	})
	var groups [][]*memIO
	for _, io := range order {
		if n := len(groups); n > 0 {
			g := groups[n-1]
			if last := g[len(g)-1]; last.slot == io.slot && last.off+int64(len(last.buf)) == io.off && last.patient == io.patient && last.own == io.own && last.bulk == io.bulk && len(g) < maxIOV {
				groups[n-1] = append(g, io)
				continue
			}
		}
		groups = append(groups, []*memIO{io})
	}
	if len(groups) == 1 {
		v.doGroup(groups[0], write)
		return
	}
	// Small reads too (a degraded 4 KiB read is Data of them): one after
	// another they add up their latencies. With the Ps lockstep runs with
	// (Procs), in parallel they cost less: degraded 4 KiB random reads at
	// queue depth 4 had a p99 of 0.96-1.87 times a healthy array's, against
	// 0.84-2.55 times one after another.
	var wg sync.WaitGroup
	for _, g := range groups {
		wg.Go(func() { v.doGroup(g, write) })
	}
	wg.Wait()
}

// doGroup runs I/Os to one member that lie back to back, in one call.
// Members the policy keeps out (fenced, restarting, sitting out of reads)
// count as missing. What went wrong is reported to the policy after the
// member is released.
func (v *Volume) doGroup(g []*memIO, write bool) {
	slot := g[0].slot
	m := v.members[slot]
	bufs := make([][]byte, len(g))
	for i, io := range g {
		bufs[i] = io.buf
	}
	var err error
	last := g[len(g)-1]
	lastChunk := (last.off + int64(len(last.buf)) - 1) / v.geo.chunk
	patient := !write && g[0].patient
	switch {
	case !v.usable(slot, write) && !(patient && v.holds(slot, lastChunk)):
		err = errMissing
	case !write && lastChunk >= m.cursor.Load():
		// Not rebuilt that far yet: the member it replaces, if it still
		// serves, has the data.
		err = errMissing
		if v.onSource(m, func(src *member) error { _, err := blockdev.ReadvAt(src.dev, bufs, g[0].off); return err }) {
			err = nil
		}
	case !write && !patient && v.suspect(m):
		// It was slow lately: do not let it hold the request up.
		var answered bool
		if answered, err = v.hedgedRead(m, bufs, g[0].off); !answered {
			err = errMissing
		}
	default:
		slow := false
		m.mu.RLock()
		switch {
		case m.closed.Load():
			// A restart could not reopen it: once the policy has decided
			// (fenced it, or suspended the volume), it is missing.
			if pending := m.pending.Load(); pending != nil && write {
				m.mu.RUnlock()
				<-*pending
				m.mu.RLock()
			}
			err = errMissing
		case write && g[0].buf == nil:
			err = blockdev.Discard(m.dev, g[0].off, g[0].forget)
		case write:
			_, err = blockdev.WritevAt(m.dev, bufs, g[0].off)
		case g[0].bulk || patient:
			_, err = blockdev.ReadvAt(m.dev, bufs, g[0].off)
		default:
			slow, err = v.timedRead(m, bufs, g[0].off)
		}
		m.mu.RUnlock()
		if slow {
			v.noteSlow(m) // once m.mu is let go: it reports to the policy
		}
	}
	if write && m != nil {
		// Whether or not the member took it: the source must stay
		// current for as long as it may be read.
		v.sourceWrite(m, g, bufs)
	}
	if err == errMissing {
		for _, io := range g {
			io.err = errMissing
		}
		return
	}
	var ce *blockdev.ChecksumError
	switch {
	case err == nil:
		return
	case errors.As(err, &ce):
		m.ctr.checksum.Add(int64(len(ce.Blocks)))
		for _, io := range g {
			first, last := (io.off-g[0].off)/bs, (io.off-g[0].off+int64(len(io.buf)))/bs
			var mine []int64
			for _, b := range ce.Blocks {
				if b >= first && b < last {
					mine = append(mine, b-first)
				}
			}
			if mine != nil {
				io.err = &blockdev.ChecksumError{Off: io.off, Blocks: mine}
			}
		}
		v.report(slot, func(p *Policy, now time.Time) []Action { return p.Mismatch(slot, now) })
		return
	case write:
		m.ctr.write.Add(1)
		v.missedWrite(slot, g, err)
	default:
		m.ctr.read.Add(1)
	}
	for _, io := range g {
		io.err = err
	}
	v.report(slot, func(p *Policy, now time.Time) []Action { return p.IOError(slot, now) })
}

// missedWrite records the regions of a group of writes that failed on a
// member, so that it is resynced over them once it is back.
func (v *Volume) missedWrite(slot int, g []*memIO, cause error) {
	last := g[len(g)-1]
	end := last.off + int64(len(last.buf)) + last.forget
	regions := v.intent.regionsOf(g[0].off/v.geo.chunk, (end-1)/v.geo.chunk)
	if err := v.intent.failedWrite(slot, regions); err != nil {
		v.log.Error("cannot record the regions a failed write missed: a scrub will find them", "slot", slot, "cause", cause, "err", err)
	}
}

// usable reports whether a member takes reads (or writes) now.
func (v *Volume) usable(slot int, write bool) bool {
	m := v.members[slot]
	if m == nil {
		return false
	}
	if write {
		return m.writable.Load()
	}
	return m.readable.Load()
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

// job is the part of a request that falls in one stripe.
type job struct {
	s     int64
	spans []span
}

// forStripes cuts a request into stripes, locks them all (in ascending
// order, so that requests cannot deadlock) and serves them together.
func (v *Volume) forStripes(p []byte, off int64, write bool) error {
	var jobs []job
	for _, e := range v.geo.extents(off, int64(len(p))) {
		if len(jobs) == 0 || jobs[len(jobs)-1].s != e.stripe {
			jobs = append(jobs, job{s: e.stripe})
		}
		j := &jobs[len(jobs)-1]
		j.spans = append(j.spans, span{d: e.d, off: e.off, buf: p[e.pos : e.pos+e.n]})
	}
	if write {
		regions := v.intent.regionsOf(jobs[0].s, jobs[len(jobs)-1].s)
		if err := v.intent.begin(regions); err != nil {
			return err
		}
		defer v.intent.end(regions)
	}
	unlocks := make([]func(), len(jobs))
	for i, j := range jobs {
		unlocks[i] = v.locks.lock(j.s, write)
	}
	defer func() {
		for _, u := range unlocks {
			u()
		}
	}()
	if write {
		return v.writeJobs(jobs)
	}
	return errors.Join(v.readJobs(jobs, nil)...)
}

// parallel runs f(i) for i < n, in goroutines when there is more than one.
func parallel(n int, f func(i int)) {
	if n == 1 {
		f(0)
		return
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f(i) })
	}
	wg.Wait()
}

// parallelUpTo calls f(0) to f(n-1) from at most most goroutines at once,
// starting the next call as each ends, and returns when all have.
func parallelUpTo(n, most int, f func(i int)) {
	if n <= most {
		parallel(n, f)
		return
	}
	var next atomic.Int64
	parallel(most, func(int) {
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			f(i)
		}
	})
}

// readJobs reads the stripes of a request: every stripe's first-choice
// member reads go out together; stripes where some failed then fall back to
// other copies or reconstruction, in parallel. It returns each stripe's
// error. A tally, for scrub and rebuild, collects what was found (and with
// its vote flag, has every copy or chunk read and checked).
func (v *Volume) readJobs(jobs []job, t *tally) []error {
	aligned := make([][]span, len(jobs))
	from := make([]int, len(jobs)+1)
	var all []memIO
	for i, j := range jobs {
		aligned[i] = make([]span, len(j.spans))
		for k, sp := range j.spans {
			aligned[i][k], _ = v.alignSpan(sp)
		}
		all = append(all, v.planRead(j.s, aligned[i], t)...)
		from[i+1] = len(all)
	}
	v.do(all, false)
	var failed []int
	for i := range jobs {
		for _, io := range all[from[i]:from[i+1]] {
			if io.err != nil || v.votes(t) {
				failed = append(failed, i)
				break
			}
		}
	}
	errs := make([]error, len(jobs))
	if len(failed) > 0 {
		parallel(len(failed), func(k int) {
			i := failed[k]
			errs[i] = v.finishRead(jobs[i].s, aligned[i], all[from[i]:from[i+1]], t)
		})
	}
	for i, j := range jobs {
		for k, sp := range j.spans {
			if a := aligned[i][k]; &a.buf[0] != &sp.buf[0] {
				copy(sp.buf, a.buf[sp.off-a.off:])
				v.putBuf(a.buf)
			}
		}
	}
	return errs
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

// readSpans reads block-aligned spans of a locked stripe into their
// buffers, proving every block by its checksum and serving from redundancy
// what cannot be proven.
func (v *Volume) readSpans(s int64, spans []span) error {
	ios := v.planRead(s, spans, nil)
	v.do(ios, false)
	return v.finishRead(s, spans, ios, nil)
}

// planRead returns the first-choice member read of each span: its data
// chunk, or for mirrors the copy pickCopy chooses.
func (v *Volume) planRead(s int64, spans []span, t *tally) []memIO {
	g := v.geo
	if v.votes(t) {
		return v.planVote(s, spans, t != nil && t.vote)
	}
	ios := make([]memIO, len(spans))
	for i, sp := range spans {
		shard := sp.d
		if g.Parity == 0 {
			shard = sp.d*g.Copies + v.pickCopy(s, sp.d)
		}
		ios[i] = memIO{slot: g.Slot(s, shard), off: s*g.chunk + sp.off, buf: sp.buf}
	}
	return ios
}

// finishRead serves from redundancy the blocks that the planned reads ios
// could not prove.
func (v *Volume) finishRead(s int64, spans []span, ios []memIO, t *tally) error {
	if v.votes(t) {
		return v.finishVote(s, spans, ios, t)
	}
	if v.geo.Parity > 0 {
		return v.finishParity(s, spans, ios, t)
	}
	return v.finishMirror(s, spans, ios, t)
}

// unrecoverable describes the blocks of stripe s, data chunk d, that could
// not be served.
func (v *Volume) unrecoverable(s int64, d int, off int64, why string) error {
	return fmt.Errorf("%w: volume offset %d (stripe %d, chunk %d): %s",
		ErrUnrecoverable, s*v.geo.stripeData()+int64(d)*v.geo.chunk+off, s, d, why)
}

// finishMirror fetches the blocks that failed from the other copies, block
// by block, and repairs in place every copy that was found bad.
func (v *Volume) finishMirror(s int64, spans []span, ios []memIO, t *tally) error {
	g := v.geo
	var errs []error
	var repairs []memIO
	for i, sp := range spans {
		bad := badBlocks(ios[i].err, len(sp.buf)/bs)
		if bad == nil {
			continue
		}
		type attempt struct {
			slot int
			bad  []bool
		}
		var tried []attempt
		var missed []int // copies skipped: kept out of reads, or too slow
		if ios[i].err != errMissing {
			tried = append(tried, attempt{ios[i].slot, slices.Clone(bad)})
		} else {
			missed = append(missed, ios[i].slot)
		}
		first := ios[i].slot - sp.d*g.Copies // mirrors do not rotate: slot = shard
		for k := 1; k < g.Copies && anyTrue(bad); k++ {
			slot := g.Slot(s, sp.d*g.Copies+(first+k)%g.Copies)
			failed := make([]bool, len(bad))
			skipped := false
			for _, r := range runs(bad) {
				io := []memIO{{slot: slot, off: s*g.chunk + sp.off + int64(r[0])*bs, buf: sp.buf[r[0]*bs : r[1]*bs]}}
				v.do(io, false)
				skipped = skipped || io[0].err == errMissing
				still := badBlocks(io[0].err, r[1]-r[0])
				for b := r[0]; b < r[1]; b++ {
					bad[b] = still != nil && still[b-r[0]]
					failed[b] = bad[b]
				}
			}
			if !skipped {
				tried = append(tried, attempt{slot, failed})
			} else {
				missed = append(missed, slot)
			}
		}
		// No copy that takes reads could prove them: wait for the copies
		// kept out of reads.
		for _, slot := range missed {
			if !anyTrue(bad) {
				break
			}
			failed := make([]bool, len(bad))
			read := false
			for _, r := range runs(bad) {
				io := []memIO{{slot: slot, off: s*g.chunk + sp.off + int64(r[0])*bs, buf: sp.buf[r[0]*bs : r[1]*bs], err: errMissing}}
				v.lastResort(io)
				read = read || io[0].err != errMissing
				still := badBlocks(io[0].err, r[1]-r[0])
				for b := r[0]; b < r[1]; b++ {
					bad[b] = still != nil && still[b-r[0]]
					failed[b] = bad[b]
				}
			}
			if read {
				tried = append(tried, attempt{slot, failed})
			}
		}
		if r := runs(bad); r != nil {
			for _, x := range r {
				errs = append(errs, v.lose(t, s, sp.d, sp.off+int64(x[0])*bs, int64(x[1]-x[0])*bs, "no copy of the block passes its checksum"))
			}
		}
		for _, a := range tried {
			fixed := make([]bool, len(bad))
			for b := range fixed {
				fixed[b] = a.bad[b] && !bad[b]
			}
			for _, r := range runs(fixed) {
				repairs = append(repairs, memIO{slot: a.slot, off: s*g.chunk + sp.off + int64(r[0])*bs, buf: sp.buf[r[0]*bs : r[1]*bs]})
			}
		}
	}
	v.repair(repairs, t)
	return errors.Join(errs...)
}

// repair writes proven data over blocks found bad, in place, and counts
// each block repaired against its member. Callers list only members whose
// blocks were read and found bad, not those skipped (gone, fenced, sitting
// out, or too slow to wait for).
func (v *Volume) repair(ios []memIO, t *tally) {
	if len(ios) == 0 {
		return
	}
	t.found(ios)
	if t != nil && t.check {
		return
	}
	v.do(ios, true)
	for _, io := range ios {
		if io.err == nil {
			v.members[io.slot].ctr.repairs.Add(int64(len(io.buf) / bs))
		}
	}
	t.repaired(ios)
}

// pickCopy chooses the copy of data chunk d of stripe s to read first.
// Copies take turns by MiB of member space: that spreads reads over them
// while keeping the chunks one request reads from a member adjacent, so that
// they merge into one I/O (in a volume of a MiB or less, copy 0 takes every
// first read). Members that do not take reads are skipped.
func (v *Volume) pickCopy(s int64, d int) int {
	g := v.geo
	start := int(((s*g.chunk)>>20 + int64(d)) % int64(g.Copies))
	for k := range g.Copies {
		c := (start + k) % g.Copies
		if slot := g.Slot(s, d*g.Copies+c); v.usable(slot, false) && s < v.members[slot].cursor.Load() {
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
