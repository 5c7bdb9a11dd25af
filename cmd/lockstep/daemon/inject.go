package daemon

import (
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"sync"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

// injector keeps the faults injected into each member disk, by directory, so
// that they stay with the disk across restarts of the member, and a spare
// that takes its slot starts healthy.
type injector struct {
	mu     sync.Mutex
	faults map[string]*blockdev.Faults
}

// get returns the faults of the disk in dir, made empty on first use and
// seeded from the directory's name, so that a run repeats.
func (in *injector) get(dir string) *blockdev.Faults {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.faults == nil {
		in.faults = map[string]*blockdev.Faults{}
	}
	f := in.faults[dir]
	if f == nil {
		h := fnv.New64a()
		h.Write([]byte(dir))
		f = blockdev.NewFaults(h.Sum64())
		in.faults[dir] = f
	}
	return f
}

// wrap is the volume's Wrap: every member's device goes through its disk's
// faults, which cost one atomic load per I/O while there are none.
func (in *injector) wrap(_ int, dir string, dev blockdev.Device) blockdev.Device {
	return in.get(dir).Wrap(dev)
}

// active lists the members with faults in force, by slot for the members
// of the array and by directory for any other disk.
func (in *injector) active(members []raid.MemberStatus) []control.Fault {
	in.mu.Lock()
	dirs := slices.Sorted(maps.Keys(in.faults))
	in.mu.Unlock()
	out := []control.Fault{}
	for _, dir := range dirs {
		f := in.get(dir)
		rules, vanished := f.Active(), f.Vanished()
		if len(rules) == 0 && !vanished {
			continue
		}
		out = append(out, control.Fault{Slot: slotOf(members, dir), Dir: dir, Vanished: vanished, Rules: rules})
	}
	return out
}

// inject adds a fault to a member's disk, or clears the faults of one
// member or of all.
func (d *Daemon) inject(r control.Request) (control.Status, error) {
	switch r.Action {
	case "add":
		slot, dir, err := d.memberDir(r.Member)
		if err != nil {
			return control.Status{}, err
		}
		if r.Fault == nil {
			return control.Status{}, fmt.Errorf("inject names no fault: give one with --fault (%v)", blockdev.FaultKinds())
		}
		if err := d.faults.get(dir).Add(*r.Fault); err != nil {
			return control.Status{}, err
		}
		d.log.Warn("fault injected", "slot", slot, "dir", dir, "fault", r.Fault.String())
		return d.status(d.vol.Note(slot, "inject", r.Fault.String()))
	case "clear":
		var dirs []string
		if r.Member != "" {
			_, dir, err := d.memberDir(r.Member)
			if err != nil {
				return control.Status{}, err
			}
			dirs = append(dirs, dir)
		} else {
			for _, f := range d.faults.active(nil) {
				dirs = append(dirs, f.Dir)
			}
		}
		st := d.vol.Status()
		var errs []error
		for _, dir := range dirs {
			d.faults.get(dir).Clear()
			slot := slotOf(st.Members, dir)
			d.log.Info("faults cleared", "slot", slot, "dir", dir)
			errs = append(errs, d.vol.Note(slot, "inject-clear", "faults on "+dir+" cleared"))
		}
		return d.status(errs...)
	}
	return control.Status{}, fmt.Errorf("inject %q: use add or clear", r.Action)
}

// memberDir finds a member by slot number or directory and returns its
// directory as the volume opened it.
func (d *Daemon) memberDir(name string) (int, string, error) {
	slot, err := d.member(name)
	if err != nil {
		return 0, "", err
	}
	dir := d.vol.Status().Members[slot].Dir
	if dir == "" {
		return 0, "", fmt.Errorf("slot %d has no member disk to inject into: it was never assembled", slot)
	}
	return slot, dir, nil
}

// slotOf returns the slot of the member in dir, or -1.
func slotOf(members []raid.MemberStatus, dir string) int {
	for _, m := range members {
		if m.Dir == dir {
			return m.Slot
		}
	}
	return -1
}
