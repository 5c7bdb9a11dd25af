package raid

import (
	"errors"
	"fmt"
	"slices"

	"github.com/lockstepfs/lockstep/blockdev"
)

// ScrubResult is what checking a run of stripes found.
type ScrubResult struct {
	// Bytes is the volume data checked.
	Bytes int64
	// Bad and Repaired count, by slot, the blocks found bad (failing their
	// checksum, unreadable, outvoted, or disagreeing with parity) and the
	// blocks rewritten with proven data.
	Bad, Repaired []int64
	// Lost lists the data found beyond redundancy.
	Lost []Extent
}

// Scrub reads stripes [s0, s1) whole, every copy and every chunk, proves
// each block by its checksum and checks that copies and parity agree. Unless
// check is set it repairs every block found bad from the redundancy. Data
// beyond redundancy is recorded as lost (an event, and reads of it fail)
// and the scrub goes on. It fails only when the volume cannot be read at
// all (closed, suspended).
func (v *Volume) Scrub(s0, s1 int64, check bool) (ScrubResult, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := v.admit("scrub", 0, s0*v.geo.stripeData()); err != nil {
		return ScrubResult{}, err
	}
	g := v.geo
	s0, s1 = max(s0, 0), min(s1, g.stripes)
	t := newTally(g.Members, true, check)
	jobs := make([]job, 0, s1-s0)
	var bufs [][]byte
	for s := s0; s < s1; s++ {
		j := job{s: s}
		for d := range g.Data {
			buf := v.getBuf(g.chunk)
			bufs = append(bufs, buf)
			j.spans = append(j.spans, span{d: d, buf: buf})
		}
		jobs = append(jobs, j)
	}
	defer v.putBuf(bufs...)
	for _, j := range jobs {
		defer v.locks.lock(j.s, false)()
	}
	v.readJobs(jobs, t)
	res := ScrubResult{Bytes: min(s1*g.stripeData(), g.size) - min(s0*g.stripeData(), g.size), Bad: t.bad, Repaired: t.done, Lost: t.extents(g)}
	if err := v.addLost(res.Lost, "scrub"); err != nil {
		return res, fmt.Errorf("record lost data: %w", err)
	}
	return res, nil
}

// Stripes is the number of stripes in the volume.
func (v *Volume) Stripes() int64 { return v.geo.stripes }

// StripeBytes is the volume data one stripe holds.
func (v *Volume) StripeBytes() int64 { return v.geo.stripeData() }

// RegionStripes is how many stripes one region of the written set (and of
// the write-intent log) covers.
func (v *Volume) RegionStripes() int64 { return v.intent.stripes }

// WrittenRegions lists, in order, the regions ever written (and not
// discarded whole since): what background jobs need to look at.
func (v *Volume) WrittenRegions() []int64 {
	r := v.intent.writtenRegions()
	slices.Sort(r)
	return r
}

// prefixJob holds the records of background jobs (checkpoints, results).
var prefixJob = []byte("job/")

// SaveJobRecords stores background-job records (checkpoints, results) under
// their names in every member that takes writes, synced if sync. A nil
// value deletes the record.
func (v *Volume) SaveJobRecords(recs map[string][]byte, sync bool) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return ErrClosed
	}
	return v.commitAll("save job records", sync, func(b *blockdev.Batch) {
		for name, val := range recs {
			key := append(slices.Clone(prefixJob), name...)
			if val == nil {
				b.Delete(key)
			} else {
				b.Set(key, val)
			}
		}
	})
}

// ScanJobRecords calls fn with every background-job record whose name
// starts with prefix, from the first open member that holds current data
// throughout (those all hold the same records; a member being rebuilt gets
// them when it is done).
func (v *Volume) ScanJobRecords(prefix string, fn func(name string, val []byte) error) error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return ErrClosed
	}
	return v.scanJobs(prefix, func(key, val []byte) error { return fn(string(key[len(prefixJob):]), val) })
}

// scanJobs is ScanJobRecords with v.mu held, and the whole keys.
func (v *Volume) scanJobs(prefix string, fn func(key, val []byte) error) error {
	var errs []error
	for _, m := range v.members {
		if m == nil || !m.writable.Load() || m.cursor.Load() != whole {
			continue
		}
		m.mu.RLock()
		if m.closed.Load() {
			m.mu.RUnlock()
			continue
		}
		seen := false
		err := m.m.Meta.Scan(append(slices.Clone(prefixJob), prefix...), func(k, val []byte) error {
			seen = true
			return fn(k, val)
		})
		m.mu.RUnlock()
		if err == nil {
			return nil
		}
		if seen {
			return err // fn refused a record: do not feed it twice
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
