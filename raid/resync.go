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
// that stayed record them.
func (v *Volume) missedRegions(slot int) ([]int64, error) {
	seen := map[int64]bool{}
	for _, m := range v.members {
		if m == nil || m.slot == slot {
			continue
		}
		if err := scanRegions(m, missedPrefix(slot), func(r int64) { seen[r] = true }); err != nil {
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
	return v.eachWritable("forget missed regions", func(m *member) error {
		b := m.m.Meta.NewBatch()
		err := scanRegions(m, missedPrefix(slot), func(r int64) { b.Delete(regionKey(missedPrefix(slot), r)) })
		if err != nil {
			return err
		}
		return b.Commit(true)
	})
}

var _ = blockdev.BlockSize
