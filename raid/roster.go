package raid

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/lockstepfs/lockstep/blockdev"
)

// keyRoster holds the membership as the members that take writes last
// recorded it: which member holds each slot, in what state, and the hot
// spares. It is rewritten with every generation bump. Assembly uses it to
// tell a member that went away and may be resynced from one that was fenced
// or replaced (never used again), to resume a rebuild, and to find the
// spares added while the array was mounted.
var keyRoster = []byte("roster")

type roster struct {
	// Generation is the array generation the roster was written with (0
	// in rosters written before it was kept).
	Generation uint64        `json:"generation,omitempty"`
	Slots      []rosterEntry `json:"slots"`
	Spares     []rosterEntry `json:"spares,omitempty"`
}

type rosterEntry struct {
	UUID  string `json:"uuid,omitempty"`
	Dir   string `json:"dir,omitempty"`
	State string `json:"state,omitempty"` // for slots: the policy's state
}

// spareDisk is a hot spare waiting for a failover.
type spareDisk struct {
	dir   string
	label Label
}

// loadRoster reads the roster a member holds; ok is false if it has none
// (an array made before rosters were kept).
func loadRoster(m *member) (r roster, ok bool, err error) {
	raw, ok, err := m.m.Meta.Get(keyRoster)
	if err != nil || !ok {
		return r, false, err
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, false, fmt.Errorf("%w: roster of member %d: %v", ErrCorruptLabel, m.slot, err)
	}
	return r, true, nil
}

// rosterNow describes the membership as it is, and keeps it as the
// roster last recorded. v.pmu is held.
func (v *Volume) rosterNow() roster {
	r := roster{Generation: v.generation, Slots: make([]rosterEntry, len(v.members))}
	for slot, m := range v.members {
		e := rosterEntry{State: v.policy.State(slot).String()}
		if h := v.policy.members[slot]; h.state == Online && h.down != 0 {
			e.State = Removed.String() // away: it comes back through a resync
		}
		if m != nil {
			e.UUID, e.Dir = m.label.MemberUUID, m.dir
		} else if slot < len(v.roster.Slots) {
			// Absent: keep who it was, so that it can be known again.
			e.UUID, e.Dir = v.roster.Slots[slot].UUID, v.roster.Slots[slot].Dir
		}
		r.Slots[slot] = e
	}
	for _, s := range v.spares {
		r.Spares = append(r.Spares, rosterEntry{UUID: s.label.MemberUUID, Dir: s.dir})
	}
	v.roster = r
	return r
}

// findSpares adds to the assembly the spares the roster lists that were not
// given, if they still hold their labels.
func (a *assembly) findSpares(r roster) {
	have := map[string]bool{}
	for _, s := range a.spares {
		have[s.label.MemberUUID] = true
	}
	for _, e := range r.Spares {
		if have[e.UUID] {
			continue
		}
		raw, err := blockdev.ReadLabel(e.Dir)
		if err != nil {
			continue
		}
		l, err := DecodeLabel(raw)
		if err != nil || !l.Spare || l.ArrayUUID != a.base.ArrayUUID || l.MemberUUID != e.UUID {
			continue
		}
		a.spares = append(a.spares, &found{dir: filepath.Clean(e.Dir), label: l})
	}
}
