package raid

import (
	"slices"

	"github.com/lockstepfs/lockstep/blockdev"

	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// Counters are a member's error and repair counts, like zpool status's
// READ / WRITE / CKSUM columns. They are kept in the member's metadata and
// survive restarts.
type Counters struct {
	ReadErrors     int64 `json:"read_errors"`
	WriteErrors    int64 `json:"write_errors"`
	ChecksumErrors int64 `json:"checksum_errors"`
	Repairs        int64 `json:"repairs"`
	SlowIOs        int64 `json:"slow_ios"`
}

// counters is the live, atomic form of Counters.
type counters struct {
	read, write, checksum, repairs, slow atomic.Int64
}

func (c *counters) load() Counters {
	return Counters{c.read.Load(), c.write.Load(), c.checksum.Load(), c.repairs.Load(), c.slow.Load()}
}

func (c *counters) set(v Counters) {
	c.read.Store(v.ReadErrors)
	c.write.Store(v.WriteErrors)
	c.checksum.Store(v.ChecksumErrors)
	c.repairs.Store(v.Repairs)
	c.slow.Store(v.SlowIOs)
}

// Metadata keys of the records this file keeps.
var (
	keyCounters = []byte("counters")
	prefixEvent = []byte("evt/")
)

// Event is one change of a member's or the array's state, or something the
// policy decided, with why.
type Event struct {
	Time   time.Time `json:"time"`
	Slot   int       `json:"slot"` // -1 for the whole array
	Kind   string    `json:"kind"` // the action: fence, restart, suspend, ...
	Old    string    `json:"old,omitempty"`
	New    string    `json:"new,omitempty"`
	Reason string    `json:"reason"`
}

func (e Event) String() string {
	who := "array"
	if e.Slot >= 0 {
		who = fmt.Sprintf("member %d", e.Slot)
	}
	change := ""
	if e.Old != e.New {
		change = fmt.Sprintf(" %s -> %s", e.Old, e.New)
	}
	return fmt.Sprintf("%s %s %s%s: %s", e.Time.Format(time.RFC3339), who, e.Kind, change, e.Reason)
}

// loadCounters reads a member's counters.
func (m *member) loadCounters() error {
	v, ok, err := m.m.Meta.Get(keyCounters)
	if err != nil || !ok {
		return err
	}
	var c Counters
	if err := json.Unmarshal(v, &c); err != nil {
		return fmt.Errorf("%w: counters: %v", ErrCorruptLabel, err)
	}
	m.ctr.set(c)
	return nil
}

// saveCounters stores the member's counters (made durable with the next
// synced metadata write).
func (m *member) saveCounters() error {
	b, _ := json.Marshal(m.ctr.load())
	batch := m.m.Meta.NewBatch()
	batch.Set(keyCounters, b)
	return batch.Commit(false)
}

// loadEvents reads the events recorded in a member's metadata, and drops
// all but the newest maxEvents from it.
func (m *member) loadEvents() ([]Event, error) {
	var out []Event
	var keys [][]byte
	err := m.m.Meta.Scan(prefixEvent, func(key, val []byte) error {
		var e Event
		if err := json.Unmarshal(val, &e); err != nil {
			return fmt.Errorf("%w: event: %v", ErrCorruptLabel, err)
		}
		out = append(out, e)
		keys = append(keys, key)
		return nil
	})
	if err != nil || len(keys) <= maxEvents {
		return out, err
	}
	b := m.m.Meta.NewBatch()
	for _, k := range keys[:len(keys)-maxEvents] {
		b.Delete(k)
	}
	return out[len(out)-maxEvents:], b.Commit(false)
}

// maxEvents bounds the events a volume keeps in memory and in each member.
const maxEvents = 1000

// eventKey orders events by time, then by their sequence number.
func eventKey(e Event, seq uint32) []byte {
	k := binary.BigEndian.AppendUint64(append([]byte(nil), prefixEvent...), uint64(e.Time.UnixNano()))
	return binary.BigEndian.AppendUint32(k, seq)
}

// Status is the volume's state as it runs.
type Status struct {
	Array      string `json:"array"`
	ArrayUUID  string `json:"array_uuid"`
	Layout     string `json:"layout"`
	Size       int64  `json:"size"`
	Chunk      int64  `json:"chunk"`
	State      string `json:"state"` // OPTIMAL, DEGRADED, REBUILDING, SUSPENDED
	Generation uint64 `json:"generation"`
	ReadPolicy string `json:"read_policy"`
	// Consistency is the crash-consistency policy.
	Consistency string         `json:"consistency"`
	Policy      PolicyConfig   `json:"policy"`
	Members     []MemberStatus `json:"members"`
	// Spares are the hot spares waiting, by directory.
	Spares []string `json:"spares"`
	// Rebuilds are the rebuilds and resyncs under way, the one being run
	// first.
	Rebuilds []RebuildStatus `json:"rebuilds"`
	// Lost lists the ranges found beyond redundancy and not written since.
	Lost []Extent `json:"lost"`
}

// MemberStatus is one slot of a Status.
type MemberStatus struct {
	Slot     int      `json:"slot"`
	Dir      string   `json:"dir,omitempty"`
	State    string   `json:"state"`
	SitOut   bool     `json:"sit_out,omitempty"`
	Counters Counters `json:"counters"`
}

// Array states beyond those assembly reports.
const (
	ArrayRebuilding = "REBUILDING"
	ArraySuspended  = "SUSPENDED"
)

// Status reports the array and each member.
func (v *Volume) Status() Status {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	now := v.now()
	st := Status{Array: v.base.ArrayName, ArrayUUID: v.base.ArrayUUID, Layout: v.geo.Name, Size: v.geo.size, Chunk: v.geo.chunk,
		Generation: v.generation, ReadPolicy: string(v.readPolicy), Consistency: string(v.consistency), Policy: v.policy.Config()}
	st.Spares = []string{}
	for _, s := range v.spares {
		st.Spares = append(st.Spares, s.dir)
	}
	st.Rebuilds = append([]RebuildStatus{}, v.rebuildsLocked()...)
	st.Lost = append([]Extent{}, v.lost.list()...)
	degraded, rebuilding := false, false
	for slot, m := range v.members {
		state := v.policy.Shown(slot)
		ms := MemberStatus{Slot: slot, State: state.String()}
		if m != nil {
			ms.Dir, ms.Counters = m.dir, m.ctr.load()
			ms.SitOut = state == Online && !v.policy.ReadsAllowed(slot, now)
		}
		degraded = degraded || state != Online
		rebuilding = rebuilding || state == Rebuilding
		st.Members = append(st.Members, ms)
	}
	switch {
	case v.policy.Suspended():
		st.State = ArraySuspended
	case rebuilding:
		st.State = ArrayRebuilding
	case degraded:
		st.State = ArrayDegraded
	default:
		st.State = ArrayOptimal
	}
	return st
}

// Events returns the events recorded since the array was created, oldest
// first (at most the last maxEvents).
func (v *Volume) Events() []Event {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	return append([]Event(nil), v.events...)
}

// Fail fences a member on an operator's word (lockstep fail). It refuses,
// with an error wrapping ErrQuorum, to fence a member the array cannot serve
// without.
func (v *Volume) Fail(slot int) error {
	return v.operator(slot, func(p *Policy, now time.Time) ([]Action, error) { return p.OperatorFail(slot, now) })
}

// Offline takes a member out of service for maintenance (no I/O, no
// failover), refusing with ErrQuorum what would lose data. The member misses
// writes from then on, so it comes back only through a resync or rebuild.
func (v *Volume) Offline(slot int) error {
	return v.operator(slot, func(p *Policy, _ time.Time) ([]Action, error) { return p.OperatorOffline(slot) })
}

// Approve lets a fenced member's failover proceed (lockstep failover
// approve) when auto-failover is off.
func (v *Volume) Approve(slot int) error {
	return v.operator(slot, func(p *Policy, _ time.Time) ([]Action, error) { return p.Approve(slot) })
}

// operator applies what the policy decides on an operator's request about a
// member.
func (v *Volume) operator(slot int, ask func(*Policy, time.Time) ([]Action, error)) error {
	if slot < 0 || slot >= len(v.members) {
		return fmt.Errorf("no member in slot %d (the array has slots 0 to %d)", slot, len(v.members)-1)
	}
	v.pmu.Lock()
	acts, err := ask(v.policy, v.now())
	v.pmu.Unlock()
	if err != nil {
		return err
	}
	if err := v.apply(acts); err != nil {
		return err
	}
	// The operator sees the failover done when the command returns (apply
	// started it in the background too; the later of the two finds it
	// done).
	for _, a := range acts {
		if a.Kind == ActFailover {
			v.failover(a.Slot)
		}
	}
	return nil
}

// report hands something seen on a member to the policy and applies what it
// decides. Every decision that changes routing comes back as an action, and
// apply recomputes the routing, so callers need not.
func (v *Volume) report(slot int, seen func(p *Policy, now time.Time) []Action) {
	v.pmu.Lock()
	acts := seen(v.policy, v.now())
	v.pmu.Unlock()
	if len(acts) > 0 {
		if err := v.apply(acts); err != nil {
			v.log.Error("applying the policy's decision failed", "slot", slot, "err", err)
		}
	}
}

// apply carries out the policy's actions. Each is recorded (event stored,
// generation bumped and synced in every member that remains if the
// membership changed) before it lets anything through, so that no write can
// be acknowledged without a member before the others say it is stale; a
// suspension or resumption takes effect at once.
func (v *Volume) apply(acts []Action) error {
	var errs []error
	for _, a := range acts {
		e := Event{Time: v.now(), Slot: a.Slot, Kind: a.Kind.String(), Reason: a.Reason}
		switch a.Kind {
		case ActFence:
			e.Old, e.New = Online.String(), Faulted.String()
		case ActOffline:
			e.Old, e.New = Online.String(), Offline.String()
		case ActDown:
			e.Old, e.New = Online.String(), Removed.String()
		case ActResync:
			e.Old, e.New = a.Old.String(), Rebuilding.String()
			// Nothing reads it until the resync has passed.
			v.pmu.Lock()
			v.members[a.Slot].restart(0)
			v.pmu.Unlock()
		case ActSuspend:
			e.Old, e.New = "SERVING", ArraySuspended
		case ActResume:
			e.Old, e.New = ArraySuspended, "SERVING"
		}
		v.log.Warn("policy: "+e.Kind, "slot", e.Slot, "old", e.Old, "new", e.New, "reason", e.Reason)
		// Suspension changes no membership: it takes effect at once.
		switch a.Kind {
		case ActSuspend:
			v.suspended.Store(true)
		case ActResume:
			v.suspended.Store(false)
		}
		errs = append(errs, v.record(e, a.Kind == ActFence || a.Kind == ActOffline || a.Kind == ActDown || a.Kind == ActResync))
		switch a.Kind {
		case ActRestart:
			v.refreshRouting()
			go v.restart(a.Slot, a.Reason)
		case ActFailover:
			go v.failover(a.Slot)
		case ActResync:
			regions, err := v.missedRegions(a.Slot)
			if err == nil {
				err = v.startRebuild(a.Slot, KindResync, regions, rebuildCheckpoint{})
			}
			errs = append(errs, err)
		}
	}
	v.refreshRouting()
	return errors.Join(errs...)
}

// refreshRouting recomputes which members take reads and writes from the
// policy. A member kept out of reads (restarting, sitting out) is let back
// in when the others cannot serve the data without it: its reads then wait
// for it instead of failing.
func (v *Volume) refreshRouting() {
	absent := v.route()
	if err := v.intent.setAbsent(absent); err != nil {
		// Writes from now on still record what the slots miss (or fail);
		// only the writes under way at this moment may go unrecorded.
		v.log.Error("recording the writes under way that absent members miss failed: give them back with lockstep spare add (a full rebuild), not as they are", "slots", absent, "err", err)
	}
}

// route is refreshRouting's part under v.pmu. It returns the slots away
// that may come back (removed, offline, or unreachable), whose misses
// writes must record.
func (v *Volume) route() (absent []int) {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	v.routing.Add(1)
	for slot, h := range v.policy.members {
		if h.state == Removed || h.state == Offline || (h.state == Online && h.down != 0) {
			absent = append(absent, slot)
		}
	}
	now := v.now()
	reads := v.policy.readers(-1, now)
	for slot, m := range v.members {
		if !v.geo.Survives(reads) && m != nil && v.policy.State(slot) == Online && v.policy.members[slot].down == 0 {
			reads[slot] = true
		}
	}
	for slot, m := range v.members {
		if m == nil {
			continue
		}
		// A member being rebuilt takes writes, and reads behind its
		// cursor (doGroup checks that).
		st := v.policy.State(slot)
		m.writable.Store(st == Online || st == Rebuilding)
		m.readable.Store(reads[slot] || st == Rebuilding)
	}
	return absent
}

// record stores an event in every member that takes writes, bumping the
// generation in their labels first if the membership changed.
func (v *Volume) record(e Event, bump bool) error {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	if bump {
		v.generation++
	}
	v.eventSeq++
	v.events = append(v.events, e)
	if v.onEvent != nil {
		v.onEvent(e)
	}
	if len(v.events) > maxEvents {
		v.events = v.events[len(v.events)-maxEvents:]
	}
	val, _ := json.Marshal(e)
	var rost []byte
	if bump {
		rost, _ = json.Marshal(v.rosterNow())
	}
	var errs []error
	for slot, m := range v.members {
		if st := v.policy.State(slot); m == nil || (st != Online && st != Rebuilding) || v.policy.members[slot].down != 0 {
			continue
		}
		// A closed member is skipped without its lock: a failed restart
		// holds that lock while it reports.
		if m.closed.Load() {
			continue
		}
		m.mu.RLock()
		if m.closed.Load() {
			m.mu.RUnlock()
			continue
		}
		b := m.m.Meta.NewBatch()
		b.Set(eventKey(e, v.eventSeq), val)
		if bump {
			m.label.Generation = v.generation
			b.SetLabel(m.label.Encode())
			b.Set(keyRoster, rost)
		}
		if err := b.Commit(bump); err != nil {
			errs = append(errs, fmt.Errorf("record event in member %d: %w", slot, err))
		}
		m.mu.RUnlock()
	}
	return errors.Join(errs...)
}

// monitor probes every member every HealthTimeout/3 and lets time-based
// decisions happen, until Close.
func (v *Volume) monitor() {
	t := time.NewTicker(v.policy.Config().HealthTimeout / 3)
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
			v.checkHealth()
		}
	}
}

// checkHealth starts a probe of every online member that has none under
// way, reports probes that are overdue, and ticks the policy.
func (v *Volume) checkHealth() {
	now := v.now()
	timeout := v.policy.Config().HealthTimeout
	v.pmu.Lock()
	members := slices.Clone(v.members) // a failover may replace one meanwhile
	v.pmu.Unlock()
	for slot, m := range members {
		v.pmu.Lock()
		st := v.policy.State(slot)
		online := m != nil && (st == Online || st == Rebuilding)
		v.pmu.Unlock()
		if !online {
			continue
		}
		if started := m.probeStart.Load(); started != 0 {
			// A probe that hangs is itself the signal.
			if now.Sub(time.Unix(0, started)) > timeout && !m.probeReported.Swap(true) {
				v.report(slot, func(p *Policy, now time.Time) []Action { return p.Probe(slot, false, false, now) })
			}
			continue
		}
		m.probeStart.Store(now.UnixNano())
		m.probeReported.Store(false)
		go func() {
			gone, err := v.probeMember(m)
			m.probeStart.Store(0)
			if err != nil && !gone {
				m.ctr.read.Add(1)
				v.report(slot, func(p *Policy, now time.Time) []Action { return p.IOError(slot, now) })
			}
			v.report(slot, func(p *Policy, now time.Time) []Action { return p.Probe(slot, true, gone, now) })
		}()
	}
	v.report(-1, func(p *Policy, now time.Time) []Action { return p.Tick(now) })
}

// probeMember checks that a member's directory and files are still there and
// that it answers a read. gone means its directory, data file or metadata
// cannot be found, or its device has vanished.
func (v *Volume) probeMember(m *member) (gone bool, err error) {
	for _, p := range []string{m.dir, filepath.Join(m.dir, blockdev.DataFile), filepath.Join(m.dir, blockdev.MetaDir, "CURRENT")} {
		if _, err := os.Stat(p); err != nil {
			return true, err
		}
	}
	m.mu.RLock()
	raw, closed := m.raw, m.closed.Load()
	m.mu.RUnlock()
	if closed {
		// A restart could not reopen it; its files are back: try again.
		m.mu.Lock()
		defer m.mu.Unlock()
		select {
		case <-v.stop:
			return false, nil // the volume closed meanwhile
		default:
		}
		if m.closed.Load() && !m.retired.Load() {
			if err := m.reopen(v.geo.memberSize()); err != nil {
				return false, err
			}
			v.log.Info("member reopened", "slot", m.slot)
		}
		return false, nil
	}
	_, err = raw.ReadAt(make([]byte, blockdev.BlockSize), 0)
	if errors.Is(err, blockdev.ErrClosed) {
		return false, nil // restarted under the probe
	}
	return errors.Is(err, blockdev.ErrVanished), err
}
