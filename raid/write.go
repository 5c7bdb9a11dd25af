package raid

import (
	"errors"
	"fmt"
)

// stripeWrite is a planned stripe write: the member writes to issue, the
// spans they carry, and the buffers to give back once they are done.
type stripeWrite struct {
	s       int64
	spans   []span // block-aligned
	ios     []memIO
	release func()
}

// writeJobs writes the stripes of a request: each stripe is planned (old
// data read and parity computed where needed) in parallel, then every member
// write of the request goes out together.
func (v *Volume) writeJobs(jobs []job) error {
	plans := make([]stripeWrite, len(jobs))
	errs := make([]error, len(jobs))
	parallel(len(jobs), func(i int) { plans[i], errs[i] = v.planWrite(jobs[i].s, jobs[i].spans) })
	var all, logged []memIO
	for i := range plans {
		all = append(all, plans[i].ios...)
		if errs[i] == nil && v.journal.needs(plans[i]) {
			logged = append(logged, plans[i].ios...)
		}
	}
	if len(logged) > 0 {
		seq, err := v.journal.log(logged)
		if err != nil {
			for _, p := range plans {
				p.release()
			}
			return err
		}
		defer v.journal.done(seq)
	}
	v.do(all, true)
	at := 0
	for i, p := range plans {
		if errs[i] == nil {
			errs[i] = v.checkWrite(p.s, p.spans, all[at:at+len(p.ios)])
		}
		at += len(p.ios)
		p.release()
	}
	return errors.Join(errs...)
}

// planWrite prepares the member writes of one locked stripe.
func (v *Volume) planWrite(s int64, spans []span) (stripeWrite, error) {
	spans, release, err := v.alignForWrite(s, spans)
	w := stripeWrite{s: s, spans: spans, release: release}
	if err != nil {
		return w, err
	}
	g := v.geo
	if g.Parity > 0 {
		return v.planParity(w)
	}
	for _, sp := range spans {
		for c := range g.Copies {
			w.ios = append(w.ios, memIO{slot: g.Slot(s, sp.d*g.Copies+c), off: s*g.chunk + sp.off, buf: sp.buf})
		}
	}
	return w, nil
}

// checkWrite decides whether a stripe's writes left its data servable. A
// mirrored chunk is written if at least one copy took it; a parity stripe if
// no more chunks than its parity are missing or failed. A member that failed
// keeps the checksum of the new data, so its old contents are never served.
func (v *Volume) checkWrite(s int64, spans []span, ios []memIO) error {
	g := v.geo
	if g.Parity == 0 {
		for i, sp := range spans {
			ok := false
			var last error
			for _, io := range ios[i*g.Copies : (i+1)*g.Copies] {
				ok = ok || (io.err == nil && v.holds(io.slot, s))
				if io.err != nil {
					last = io.err
				}
			}
			if !ok {
				return v.unrecoverable(s, sp.d, sp.off, fmt.Sprintf("no copy took the write: %v", last))
			}
		}
		return nil
	}
	lost := map[int]bool{}
	for i := range g.Members {
		if !v.holds(g.Slot(s, i), s) {
			lost[g.Slot(s, i)] = true
		}
	}
	for _, io := range ios {
		if io.err != nil {
			lost[io.slot] = true
		}
	}
	if len(lost) > g.Parity {
		return v.unrecoverable(s, spans[0].d, spans[0].off,
			fmt.Sprintf("the write reached only %d of %d chunks of the stripe", g.Members-len(lost), g.Members))
	}
	return nil
}

// alignForWrite widens unaligned spans to whole blocks, filling the edges
// with the old contents read (and proven) through the read path.
func (v *Volume) alignForWrite(s int64, spans []span) ([]span, func(), error) {
	var owned [][]byte
	release := func() { v.putBuf(owned...) }
	var edges []span
	out := make([]span, len(spans))
	for i, sp := range spans {
		a, bounced := v.alignSpan(sp)
		out[i] = a
		if !bounced {
			continue
		}
		owned = append(owned, a.buf)
		if sp.off != a.off {
			edges = append(edges, span{d: a.d, off: a.off, buf: a.buf[:bs]})
		}
		if tail := a.end() - bs; sp.end() != a.end() && (tail != a.off || sp.off == a.off) {
			edges = append(edges, span{d: a.d, off: tail, buf: a.buf[tail-a.off:]})
		}
	}
	if len(edges) > 0 {
		if err := v.readSpans(s, edges); err != nil {
			return nil, release, fmt.Errorf("read around an unaligned write: %w", err)
		}
	}
	for i, sp := range spans {
		copy(out[i].buf[sp.off-out[i].off:], sp.buf)
	}
	return out, release, nil
}

// planParity plans the writes of one parity stripe. Over the columns
// [lo, hi) that the spans touch, it either encodes the whole stripe from new
// and old data (reconstruct-write) or folds the change into the old parity
// (read-modify-write, reedsolomon's Update), whichever reads fewer chunks; a
// whole stripe is encoded without reading anything.
func (v *Volume) planParity(w stripeWrite) (stripeWrite, error) {
	g, s, spans := v.geo, w.s, w.spans
	lo, hi := g.chunk, int64(0)
	for _, sp := range spans {
		lo, hi = min(lo, sp.off), max(hi, sp.end())
	}
	bySlot := make([]*span, g.Data)
	full := 0
	for i := range spans {
		bySlot[spans[i].d] = &spans[i]
		if spans[i].off == lo && spans[i].end() == hi {
			full++
		}
	}
	parity := make([][]byte, g.Parity)
	for p := range parity {
		parity[p] = v.getBuf(hi - lo)
	}
	releaseSpans := w.release
	w.release = func() { releaseSpans(); v.putBuf(parity...) }

	reconstructReads := g.Data - full
	updateReads := len(spans) + g.Parity
	var err error
	if updateReads < reconstructReads {
		err = v.updateParity(s, bySlot, lo, hi, parity)
	}
	if updateReads >= reconstructReads || err != nil {
		if err = v.encodeParity(s, bySlot, lo, hi, parity); err != nil {
			return w, err
		}
	}
	for _, sp := range spans {
		w.ios = append(w.ios, memIO{slot: g.Slot(s, sp.d), off: s*g.chunk + sp.off, buf: sp.buf})
	}
	for p := range parity {
		w.ios = append(w.ios, memIO{slot: g.Slot(s, g.Data+p), off: s*g.chunk + lo, buf: parity[p]})
	}
	return w, nil
}

// encodeParity computes parity over [lo, hi) from the new data in the spans
// and the old data, read through the read path, everywhere else.
func (v *Volume) encodeParity(s int64, bySlot []*span, lo, hi int64, parity [][]byte) error {
	g := v.geo
	shards := make([][]byte, g.Members)
	var reads []span
	var owned [][]byte
	defer func() { v.putBuf(owned...) }()
	for d, sp := range bySlot {
		if sp != nil && sp.off == lo && sp.end() == hi {
			shards[d] = sp.buf
			continue
		}
		shards[d] = v.getBuf(hi - lo)
		owned = append(owned, shards[d])
		reads = append(reads, span{d: d, off: lo, buf: shards[d]})
	}
	if len(reads) > 0 {
		if err := v.readSpans(s, reads); err != nil {
			return fmt.Errorf("read the rest of the stripe to compute parity: %w", err)
		}
	}
	for d, sp := range bySlot {
		if sp != nil {
			copy(shards[d][sp.off-lo:], sp.buf)
		}
	}
	copy(shards[g.Data:], parity)
	if err := v.codec.Encode(shards); err != nil {
		return fmt.Errorf("encode stripe %d: %w", s, err)
	}
	return nil
}

// updateParity computes parity over [lo, hi) from the old parity and the old
// and new contents of the chunks written. It fails, leaving the caller to
// encode instead, when an old parity chunk is present but cannot be proven
// good, or is skipped on a member that takes the write all the same.
func (v *Volume) updateParity(s int64, bySlot []*span, lo, hi int64, parity [][]byte) error {
	g := v.geo
	old := make([][]byte, g.Members)
	fresh := make([][]byte, g.Data)
	var reads []span
	var owned [][]byte
	defer func() { v.putBuf(owned...) }()
	for d, sp := range bySlot {
		if sp == nil {
			continue
		}
		old[d] = v.getBuf(hi - lo)
		owned = append(owned, old[d])
		reads = append(reads, span{d: d, off: lo, buf: old[d]})
	}
	if err := v.readSpans(s, reads); err != nil {
		return err
	}
	ios := make([]memIO, g.Parity)
	for p := range parity {
		ios[p] = memIO{slot: g.Slot(s, g.Data+p), off: s*g.chunk + lo, buf: parity[p]}
	}
	v.do(ios, false)
	for _, io := range ios {
		switch {
		case io.err == errMissing && v.usable(io.slot, true):
			// Skipped, yet it takes the write (a member being rebuilt,
			// ahead of its cursor): the update would write it parity
			// folded from whatever it holds there.
			return fmt.Errorf("old parity of member %d not current: %w", io.slot, io.err)
		case io.err != nil && io.err != errMissing:
			return fmt.Errorf("old parity unreadable: %w", io.err)
		}
	}
	for d, sp := range bySlot {
		if sp == nil {
			continue
		}
		if sp.off == lo && sp.end() == hi {
			fresh[d] = sp.buf
			continue
		}
		fresh[d] = v.getBuf(hi - lo)
		owned = append(owned, fresh[d])
		copy(fresh[d], old[d])
		copy(fresh[d][sp.off-lo:], sp.buf)
	}
	copy(old[g.Data:], parity)
	if err := v.codec.Update(old, fresh); err != nil {
		return fmt.Errorf("update parity of stripe %d: %w", s, err)
	}
	return nil
}
