package raid

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
)

// After an unclean shutdown (the process killed, the machine down) writes
// that were under way may have reached some members of a stripe and not
// others, and their checksums may not have reached the metadata. Recovery
// makes every stripe that may be affected agree again before the volume
// serves: each block keeps one version that was written to it, its
// checksum is made to match, and copies and parity are rewritten from it.
// Blocks whose checksum still matches hold the last flushed version and are
// kept; a block that matches nothing holds a write that was not flushed,
// which is as good a version as the older one, and is adopted.

// wasUnclean reports whether any member was left open by its last user, and
// marks every member open for this one, synced, before anything is written.
func (v *Volume) wasUnclean() (bool, error) {
	unclean := false
	for _, m := range v.members {
		if m == nil {
			continue
		}
		st, ok, err := m.m.Meta.Get(keyState)
		if err != nil {
			return false, fmt.Errorf("member %d shutdown state: %w", m.slot, err)
		}
		unclean = unclean || (ok && !bytes.Equal(st, stateClean))
	}
	err := v.commitAll("mark the array open", true, func(b *blockdev.Batch) { b.Set(keyState, stateOpen) })
	return unclean, err
}

// markClean records a clean shutdown in every member that takes writes:
// nothing is left to resync. The volume has been flushed.
func (v *Volume) markClean() error {
	return v.eachWritable("mark the array clean", func(m *member) error {
		b := m.m.Meta.NewBatch()
		for _, prefix := range [][]byte{prefixIntent, prefixJournal} {
			err := m.m.Meta.Scan(prefix, func(k, _ []byte) error {
				b.Delete(append([]byte(nil), k...))
				return nil
			})
			if err != nil {
				return err
			}
		}
		b.Set(keyState, stateClean)
		return b.Commit(true)
	})
}

// recoverUnclean resyncs what an unclean shutdown may have left in
// disagreement: the regions in the write-intent log (bitmap), or the whole
// volume (resync). It records an event saying what it did.
func (v *Volume) recoverUnclean(c Consistency) error {
	start := time.Now()
	replayed, err := v.journal.replay()
	if err != nil {
		return err
	}
	regions := v.intent.writtenRegions()
	if c != ConsistencyResync {
		marked := map[int64]bool{}
		for _, m := range v.members {
			if m == nil {
				continue
			}
			if err := scanRegions(m, prefixIntent, func(r int64) { marked[r] = true }); err != nil {
				return fmt.Errorf("member %d write intents: %w", m.slot, err)
			}
		}
		regions = regions[:0]
		for r := range marked {
			regions = append(regions, r)
		}
	}
	var fixed, skipped int
	for _, r := range regions {
		for s := r * v.intent.stripes; s < min((r+1)*v.intent.stripes, v.geo.stripes); s++ {
			f, err := v.resyncStripe(s)
			if errors.Is(err, errCannotResync) {
				skipped++
				continue
			}
			if err != nil {
				return fmt.Errorf("resync stripe %d: %w", s, err)
			}
			if f {
				fixed++
			}
		}
	}
	if err := v.flush(); err != nil {
		return fmt.Errorf("flush after resync: %w", err)
	}
	took := time.Since(start)
	v.journal.flushed(v.journal.flushBegun())
	what := fmt.Sprintf("unclean shutdown: replayed %d journal entries, resynced %d region(s) of up to %s (%s policy): %d stripe(s) made to agree, %d left as they were for lack of members, in %s",
		replayed, len(regions), FormatSize(v.intent.stripes*v.geo.stripeData()), c, fixed, skipped, took.Round(time.Millisecond))
	v.log.Warn("recovered from an unclean shutdown", "journal_entries", replayed, "regions", len(regions), "stripes_fixed", fixed,
		"stripes_skipped", skipped, "policy", string(c), "took", took)
	return v.record(Event{Time: v.now(), Slot: -1, Kind: "recover", Reason: what}, false)
}

// errCannotResync says a stripe lacks the members to be checked.
var errCannotResync = errors.New("too few members to resync the stripe")

// resyncStripe makes one stripe's copies or parity, and its checksums, agree
// with one written version of its data. It reports whether it changed
// anything.
func (v *Volume) resyncStripe(s int64) (bool, error) {
	defer v.locks.lock(s, true)()
	g := v.geo
	shards := g.Data * g.Copies
	if g.Parity > 0 {
		shards = g.Data + g.Parity
	}
	// Every shard as it is on disk, with the checksums on record.
	data := make([][]byte, shards)
	sums := make([][]uint32, shards)
	for i := range shards {
		slot := g.Slot(s, i)
		if !v.holds(slot, s) {
			continue
		}
		m := v.members[slot]
		buf := v.getBuf(g.chunk)
		defer v.putBuf(buf)
		sum := make([]uint32, g.chunk/bs)
		m.mu.RLock()
		_, err := m.raw.ReadAt(buf, s*g.chunk)
		if err == nil {
			err = m.m.Sums.Lookup(s*g.chunk/bs, sum)
		}
		m.mu.RUnlock()
		if err != nil {
			v.log.Warn("resync: member unreadable; its shard is left for rebuild", "slot", m.slot, "stripe", s, "err", err)
			continue
		}
		data[i], sums[i] = buf, sum
	}
	if g.Parity > 0 {
		return v.resyncParity(s, data, sums)
	}
	return v.resyncMirror(s, data, sums)
}

// resyncMirror picks, block by block, the copy whose checksum matches (the
// flushed version) or else the first copy, and writes it wherever the copies
// or checksums differ.
func (v *Volume) resyncMirror(s int64, data [][]byte, sums [][]uint32) (bool, error) {
	g := v.geo
	changed := false
	for d := range g.Data {
		for b := int64(0); b < g.chunk/bs; b++ {
			pick := -1
			for c := range g.Copies {
				i := d*g.Copies + c
				if data[i] == nil {
					continue
				}
				if pick < 0 {
					pick = i
				}
				if blockdev.Checksum(data[i][b*bs:(b+1)*bs]) == sums[i][b] {
					pick = i
					break
				}
			}
			if pick < 0 {
				return changed, errCannotResync
			}
			want := data[pick][b*bs : (b+1)*bs]
			sum := blockdev.Checksum(want)
			for c := range g.Copies {
				i := d*g.Copies + c
				if data[i] == nil || (sums[i][b] == sum && bytes.Equal(data[i][b*bs:(b+1)*bs], want)) {
					continue
				}
				if err := v.rewrite(g.Slot(s, i), s*g.chunk+b*bs, want); err != nil {
					return changed, err
				}
				changed = true
			}
		}
	}
	return changed, nil
}

// resyncParity adopts the data chunks as they are (recording the checksums
// of blocks written but not flushed), then writes the parity they give
// wherever it differs. A stripe missing data chunks (within its parity) has
// no parity to recompute: every chunk present is adopted as it is, which the
// journal, logging every write to a degraded stripe, has made consistent.
func (v *Volume) resyncParity(s int64, data [][]byte, sums [][]uint32) (bool, error) {
	g := v.geo
	missing, missingData := 0, 0
	for i := range data {
		if data[i] == nil {
			missing++
			if i < g.Data {
				missingData++
			}
		}
	}
	if missing > g.Parity {
		return false, errCannotResync
	}
	adopt := g.Data
	if missingData > 0 {
		adopt = len(data)
	}
	changed := false
	for i := range adopt {
		if data[i] == nil {
			continue
		}
		for b := int64(0); b < g.chunk/bs; b++ {
			block := data[i][b*bs : (b+1)*bs]
			if blockdev.Checksum(block) != sums[i][b] {
				if err := v.rewrite(g.Slot(s, i), s*g.chunk+b*bs, block); err != nil {
					return changed, err
				}
				changed = true
			}
		}
	}
	if missingData > 0 {
		return changed, nil
	}
	parity := make([][]byte, g.Parity)
	shards := append(append([][]byte(nil), data[:g.Data]...), parity...)
	for j := range parity {
		shards[g.Data+j] = v.getBuf(g.chunk)
		defer v.putBuf(shards[g.Data+j])
	}
	if err := v.codec.Encode(shards); err != nil {
		return changed, err
	}
	for j := range g.Parity {
		i := g.Data + j
		if data[i] == nil {
			continue
		}
		for b := int64(0); b < g.chunk/bs; b++ {
			want := shards[i][b*bs : (b+1)*bs]
			if sums[i][b] == blockdev.Checksum(want) && bytes.Equal(data[i][b*bs:(b+1)*bs], want) {
				continue
			}
			if err := v.rewrite(g.Slot(s, i), s*g.chunk+b*bs, want); err != nil {
				return changed, err
			}
			changed = true
		}
	}
	return changed, nil
}

// rewrite writes blocks (at most a chunk) to a member through its checksum
// layer, which records their checksums.
func (v *Volume) rewrite(slot int, off int64, block []byte) error {
	m := v.members[slot]
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed.Load() {
		return errMissing
	}
	buf := v.getBuf(int64(len(block)))
	defer v.putBuf(buf)
	copy(buf, block)
	if _, err := m.dev.WriteAt(buf, off); err != nil {
		return fmt.Errorf("member %d at %d: %w", slot, off, err)
	}
	return nil
}
