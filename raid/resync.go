package raid

import (
	"fmt"
	"slices"

	"github.com/lockstepfs/lockstep/blockdev"
)

// While a member is away (removed, offline, unreachable), the members that
// stay record, before writing a region, that the absent slot missed it:
// when the member comes back with its label intact it is resynced over
// those regions only (md's write-intent bitmap), not rebuilt.

// missedPrefix is the prefix of the regions a slot missed.
func missedPrefix(slot int) []byte { return fmt.Appendf(nil, "missed/%d/", slot) }

// missedRegions lists the regions the absent slot missed, as the members
// that stayed (and are still open: not fenced) record them.
func (v *Volume) missedRegions(slot int) ([]int64, error) {
	seen := map[int64]bool{}
	for _, m := range v.members {
		if m == nil || m.slot == slot || !m.writable.Load() {
			continue
		}
		m.mu.RLock()
		var err error
		if !m.closed.Load() {
			err = scanRegions(m, missedPrefix(slot), func(r int64) { seen[r] = true })
		}
		m.mu.RUnlock()
		if err != nil {
			return nil, fmt.Errorf("member %d, regions slot %d missed: %w", m.slot, slot, err)
		}
	}
	out := make([]int64, 0, len(seen))
	for r := range seen {
		out = append(out, r)
	}
	slices.Sort(out)
	return out, nil
}

// forgetMissed drops the record of what slot missed, once it is resynced.
func (v *Volume) forgetMissed(slot int) error {
	v.intent.forgetMissed(slot)
	return v.eachWritable("forget missed regions", func(m *member) error {
		b := m.m.Meta.NewBatch()
		err := scanRegions(m, missedPrefix(slot), func(r int64) { b.Delete(regionKey(missedPrefix(slot), r)) })
		if err != nil {
			return err
		}
		return b.Commit(true)
	})
}

// loadMissed reads what the absent slots missed in earlier mounts. After an
// unclean shutdown an absent slot may have been present when the writes
// under way were cut short: every written region counts as missed then.
func (v *Volume) loadMissed(unclean bool) error {
	v.intent.mu.Lock()
	absent := slices.Clone(v.intent.absent)
	v.intent.mu.Unlock()
	for _, slot := range absent {
		regions, err := v.missedRegions(slot)
		if err != nil {
			return err
		}
		if unclean {
			regions = v.intent.writtenRegions()
			err := v.commitAll("mark regions missed", true, func(b *blockdev.Batch) {
				for _, r := range regions {
					b.Set(regionKey(missedPrefix(slot), r), nil)
				}
			})
			if err != nil {
				return err
			}
		}
		v.intent.mu.Lock()
		for _, r := range regions {
			v.intent.missedBy(slot)[r] = true
		}
		v.intent.mu.Unlock()
	}
	return nil
}
