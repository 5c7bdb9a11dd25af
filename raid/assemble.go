package raid

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/lockstepfs/lockstep/blockdev"
)

// Member states as assembly and status show them.
const (
	StateOnline  = "ONLINE"  // current and serving
	StateStale   = "STALE"   // an older generation than the array: not used until resynced
	StateMissing = "MISSING" // no member found for the slot
)

// Array states.
const (
	ArrayOptimal  = "OPTIMAL"  // every member online
	ArrayDegraded = "DEGRADED" // members missing, within redundancy
	ArrayFailed   = "FAILED"   // members missing beyond redundancy
)

// found is one member directory whose label (and roster) was read.
type found struct {
	dir    string
	label  Label
	roster []byte // nil if it has none
}

// assembly is what the labels say about an array.
type assembly struct {
	base    Label    // the array's identity (a current member's label)
	layout  Layout   //
	current []*found // by slot; nil where no current member was found
	stale   []*found // members with an older generation
	// behind are current members whose label a crash left one generation
	// behind (see caughtUp); their labels are to be brought up to date.
	behind  []*found
	spares  []*found // hot spares
	state   string   // ArrayOptimal, ArrayDegraded or ArrayFailed
	present []bool   // by slot
}

// assemble decides, from labels alone, which members make up the array. It
// refuses members of different arrays or layouts and two members in one
// slot; the highest generation is the truth and older ones are stale.
func assemble(members []found) (*assembly, error) {
	if len(members) == 0 {
		return nil, fmt.Errorf("%w: no member directories given", ErrTooFewMembers)
	}
	// Spares hold no slot and no generation of the array: they are
	// checked for identity like the others, then set aside.
	sort.SliceStable(members, func(i, j int) bool {
		if members[i].label.Spare != members[j].label.Spare {
			return !members[i].label.Spare
		}
		return members[i].label.Generation > members[j].label.Generation
	})
	if members[0].label.Spare {
		return nil, fmt.Errorf("%w: %s and the others given are hot spares: give the array's members too", ErrTooFewMembers, members[0].dir)
	}
	a := &assembly{base: members[0].label}
	b := a.base
	seen := map[string]string{}
	for _, m := range members {
		l := m.label
		if l.ArrayUUID != b.ArrayUUID {
			return nil, fmt.Errorf("%w: %s belongs to array %s (%s) but %s to array %s (%s)",
				ErrForeignMember, m.dir, l.ArrayName, l.ArrayUUID, members[0].dir, b.ArrayName, b.ArrayUUID)
		}
		if l.Layout != b.Layout || l.Members != b.Members || l.Chunk != b.Chunk || l.Size != b.Size {
			return nil, fmt.Errorf("%w: %s has layout %s/%d members/chunk %d/size %d but %s has %s/%d/%d/%d",
				ErrForeignMember, m.dir, l.Layout, l.Members, l.Chunk, l.Size, members[0].dir, b.Layout, b.Members, b.Chunk, b.Size)
		}
		if other, ok := seen[l.MemberUUID]; ok {
			return nil, fmt.Errorf("%w: %s and %s hold the same member %s (a copied directory?)", ErrDuplicateMember, other, m.dir, l.MemberUUID)
		}
		seen[l.MemberUUID] = m.dir
	}
	var err error
	if a.layout, err = ParseLayout(b.Layout, b.Members); err != nil {
		return nil, err
	}
	a.current = make([]*found, b.Members)
	a.present = make([]bool, b.Members)
	for i := range members {
		m := &members[i]
		switch {
		case m.label.Spare:
			a.spares = append(a.spares, m)
		case m.label.Generation < b.Generation && !caughtUp(&members[0], m):
			a.stale = append(a.stale, m)
		case m.label.Generation < b.Generation && a.current[m.label.Slot] == nil:
			a.behind = append(a.behind, m)
			a.current[m.label.Slot] = m
			a.present[m.label.Slot] = true
		case a.current[m.label.Slot] != nil:
			return nil, fmt.Errorf("%w: %s and %s both claim slot %d at generation %d",
				ErrForeignMember, a.current[m.label.Slot].dir, m.dir, m.label.Slot, b.Generation)
		default:
			a.current[m.label.Slot] = m
			a.present[m.label.Slot] = true
		}
	}
	switch {
	case !a.layout.Survives(a.present):
		a.state = ArrayFailed
	case len(members)-len(a.stale)-len(a.spares) < b.Members:
		a.state = ArrayDegraded
	default:
		a.state = ArrayOptimal
	}
	return a, nil
}

// caughtUp reports whether m, a generation behind newest, is current all
// the same: a generation change writes the new label to the members one
// after another, so a crash in the middle leaves some behind. The newest
// roster, written with the change, tells them apart from a member the
// change left out: it lists m in its slot, online or being rebuilt.
// (Nothing reaches the members before a change is written to all of
// them, so one left behind by a crash has missed no data.)
func caughtUp(newest, m *found) bool {
	if m.label.Generation+1 != newest.label.Generation || newest.roster == nil {
		return false
	}
	var r roster
	if json.Unmarshal(newest.roster, &r) != nil || r.Generation != newest.label.Generation || m.label.Slot >= len(r.Slots) {
		return false
	}
	e := r.Slots[m.label.Slot]
	return e.UUID == m.label.MemberUUID && (e.State == Online.String() || e.State == Rebuilding.String())
}

// missingSlots lists the slots without a current member.
func (a *assembly) missingSlots() []int {
	var out []int
	for s, p := range a.present {
		if !p {
			out = append(out, s)
		}
	}
	return out
}

// assembleDirs reads the labels in dirs and assembles the array they make.
func assembleDirs(dirs []string) (*assembly, error) {
	ms, err := readLabels(dirs)
	if err != nil {
		return nil, err
	}
	return assemble(ms)
}

// readLabels reads and decodes the label in every directory.
func readLabels(dirs []string) ([]found, error) {
	dirs, err := checkDirs(dirs, false)
	if err != nil {
		return nil, err
	}
	out := make([]found, 0, len(dirs))
	for _, d := range dirs {
		raw, rost, err := blockdev.ReadLabelWith(d, keyRoster)
		if errors.Is(err, blockdev.ErrNoLabel) {
			return nil, fmt.Errorf("%w: %s has metadata but no label", ErrCorruptLabel, d)
		}
		if err != nil {
			return nil, err
		}
		l, err := DecodeLabel(raw)
		if err != nil {
			return nil, fmt.Errorf("member %s: %w", d, err)
		}
		out = append(out, found{dir: d, label: l, roster: rost})
	}
	return out, nil
}

// Report is an array's status as its members' labels tell it.
type Report struct {
	ArrayUUID  string         `json:"array_uuid"`
	Name       string         `json:"name"`
	Layout     string         `json:"layout"`
	Members    int            `json:"members"`
	Chunk      int64          `json:"chunk"`
	Size       int64          `json:"size"`
	Generation uint64         `json:"generation"`
	State      string         `json:"state"`
	Slots      []MemberReport `json:"slots"`
	Spares     []string       `json:"spares,omitempty"`
}

// MemberReport is one slot of a Report.
type MemberReport struct {
	Slot       int    `json:"slot"`
	State      string `json:"state"`
	Dir        string `json:"dir,omitempty"`
	MemberUUID string `json:"member_uuid,omitempty"`
	Generation uint64 `json:"generation,omitempty"`
}

// Inspect reads the labels in dirs, without opening the members for writing,
// and reports the array they make up.
func Inspect(dirs []string) (*Report, error) {
	a, err := assembleDirs(dirs)
	if err != nil {
		return nil, err
	}
	return a.report(), nil
}

func (a *assembly) report() *Report {
	b := a.base
	r := &Report{ArrayUUID: b.ArrayUUID, Name: b.ArrayName, Layout: b.Layout, Members: b.Members,
		Chunk: b.Chunk, Size: b.Size, Generation: b.Generation, State: a.state}
	for slot, m := range a.current {
		mr := MemberReport{Slot: slot, State: StateMissing}
		if m != nil {
			mr = MemberReport{Slot: slot, State: StateOnline, Dir: m.dir, MemberUUID: m.label.MemberUUID, Generation: m.label.Generation}
		}
		for _, s := range a.stale {
			if m == nil && s.label.Slot == slot {
				mr = MemberReport{Slot: slot, State: StateStale, Dir: s.dir, MemberUUID: s.label.MemberUUID, Generation: s.label.Generation}
			}
		}
		r.Slots = append(r.Slots, mr)
	}
	for _, s := range a.spares {
		r.Spares = append(r.Spares, s.dir)
	}
	return r
}
