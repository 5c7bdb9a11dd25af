package raid

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/lockstepfs/lockstep/blockdev"
)

// Options tune how a volume is opened.
type Options struct {
	// Direct opens the members' data files with O_DIRECT, bypassing the
	// page cache.
	Direct bool
	// Logger receives warnings (degraded assembly, stale members). Nil
	// means slog.Default().
	Logger *slog.Logger
	// Wrap, if set, decorates each member's data device below the checksum
	// layer, each time the member in dir is opened to serve slot; tests and
	// lockstep inject use it to inject faults.
	Wrap func(slot int, dir string, dev blockdev.Device) blockdev.Device
	// Policy is the failover policy; the zero value means DefaultPolicy().
	Policy PolicyConfig
	// ReadPolicy is ReadFast (the default) or ReadVote.
	ReadPolicy ReadPolicy
	// Now is the clock; nil means time.Now. Tests pass a fake one.
	Now func() time.Time
	// OnEvent, if set, is called with every event as it is recorded.
	OnEvent func(Event)
	// NoMonitor turns the health monitor off (for tests that drive the
	// policy by hand).
	NoMonitor bool
	// Consistency is the crash-consistency policy; empty means
	// ConsistencyJournal for parity layouts (the only policy that closes
	// the write hole when a crash finds the array degraded) and
	// ConsistencyBitmap for the others.
	Consistency Consistency
}

// ReadPolicy says how reads choose among copies.
type ReadPolicy string

// Read policies.
const (
	// ReadFast reads one copy (or the data chunks), checks checksums, and
	// falls back to the others only on error.
	ReadFast ReadPolicy = "fast"
	// ReadVote reads every copy and takes the majority of identical
	// contents (a checksum arbitrates between two copies); for parity
	// layouts it checks every stripe read against its parity.
	ReadVote ReadPolicy = "vote"
)

// member is one open member of a volume.
type member struct {
	slot int
	dir  string
	opts Options

	probeStart    atomic.Int64 // unix nanoseconds when the probe under way began; 0 if none
	probeReported atomic.Bool  // the probe under way was already reported overdue

	// mu is held shared by I/O and exclusively by a restart or Close. The
	// volume's pmu comes before it (record holds pmu while it writes to the
	// members): whoever holds mu must not report to the policy, or a
	// restart waiting for mu, which holds back the readers behind it,
	// closes a cycle.
	mu     sync.RWMutex
	closed atomic.Bool // its files are closed (the volume closed, or a reopen failed): no I/O; set under mu
	// pending, while a failed restart's outcome is being decided, is closed
	// once the policy has fenced the member or suspended the volume; a
	// write that finds the member closed waits on it.
	pending atomic.Pointer[chan struct{}]
	label   Label
	m       *blockdev.Member
	raw     blockdev.Device // the (wrapped) data file, below the checksums: probes read it
	dev     blockdev.Device // checksummed, over raw

	ctr      counters
	slow     slowness
	writable atomic.Bool // the policy lets it take writes
	readable atomic.Bool // ... and reads
	// cursor is the first stripe a rebuild or resync of the member has
	// not reached: the member holds current data only below it, and is
	// read only there. whole (the default) once it is current throughout.
	cursor atomic.Int64
	// durable is the cursor of the member's last rebuild checkpoint (at
	// most cursor): where a crash puts the cursor back to. Stripes between
	// the two were rebuilt but a crash forgets it, so writes to them are
	// journaled as writes to a degraded stripe are.
	durable atomic.Int64
	retired atomic.Bool // replaced by another member: never opened again
	// source is the healthy member this one replaces, while this one is
	// rebuilt (see source.go); nil if none.
	source atomic.Pointer[member]
}

// whole is the cursor of a member current throughout.
const whole = math.MaxInt64

func newMember(slot int, dir string, o Options) *member {
	m := &member{slot: slot, dir: dir, opts: o}
	m.restart(whole)
	return m
}

// restart puts the member's cursor, and the checkpoint it is taken to have,
// at c: a rebuild or resync starts there.
func (m *member) restart(c int64) {
	m.cursor.Store(c)
	m.durable.Store(c)
}

// holds reports whether the member in slot takes writes and holds current
// data in stripe s.
func (v *Volume) holds(slot int, s int64) bool {
	m := v.members[slot]
	return m != nil && m.writable.Load() && s < m.cursor.Load()
}

// holdsDurably reports whether the member in slot takes writes and would
// still be taken to hold current data in stripe s after a crash.
func (v *Volume) holdsDurably(slot int, s int64) bool {
	m := v.members[slot]
	return m != nil && m.writable.Load() && s < m.durable.Load()
}

// Volume is an open array: one virtual block device over its members. It is
// safe for concurrent use. Writes to one stripe are serialised; requests to
// different stripes run in parallel, and the member I/O of one request runs
// in parallel too.
type Volume struct {
	geo     geometry
	base    Label
	members []*member // by slot; nil where the member is missing
	codec   reedsolomon.Encoder
	locks   stripeLocks
	intent  *intentLog
	journal *journal
	lost    lostSet
	bufs    sync.Pool // chunk-sized, block-aligned buffers
	log     *slog.Logger

	mu     sync.RWMutex // I/O holds it shared, Close exclusively
	closed bool

	now         func() time.Time
	onEvent     func(Event)
	readPolicy  ReadPolicy
	consistency Consistency
	suspended   atomic.Bool
	stop        chan struct{}  // closed by Close: stops the monitor
	monitoring  sync.WaitGroup // the monitor loop (not its probes: a hung probe must not hang Close)

	opts       Options
	routing    atomic.Uint64 // bumped whenever the routing is recomputed
	foreground atomic.Uint64 // requests from users, for background jobs to yield to
	work       chan struct{} // signalled when background work (a rebuild) is to be done

	pmu        sync.Mutex // guards the fields below, and v.members[i] with v.mu held exclusively
	policy     *Policy
	generation uint64
	events     []Event
	eventSeq   uint32
	roster     roster       // the membership last recorded
	spares     []*spareDisk // hot spares waiting
	jobs       []*rebuild   // the rebuilds and resyncs under way, the one being run first
}

// Open assembles the array from its member directories, given in any order.
// It refuses directories that are not members, corrupt labels, members of
// different arrays or layouts, the same member twice, and too few members to
// serve the data. It opens degraded, with a warning, when members are
// missing within the layout's redundancy.
func Open(dirs []string, o Options) (*Volume, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	a, err := assembleDirs(dirs)
	if err != nil {
		return nil, err
	}
	if a.state == ArrayFailed {
		return nil, fmt.Errorf("%w: array %s (%s) is missing slots %v, more than its redundancy of %d: find the missing member directories",
			ErrTooFewMembers, a.base.ArrayName, a.layout.Name, a.missingSlots(), a.layout.Redundancy())
	}
	for _, s := range a.stale {
		log.Warn("member is stale and left out until it is resynced", "dir", s.dir, "slot", s.label.Slot,
			"generation", s.label.Generation, "array_generation", a.base.Generation)
	}
	if a.state == ArrayDegraded {
		log.Warn("array assembled degraded", "array", a.base.ArrayName, "missing_slots", a.missingSlots())
	}
	if o.Policy == (PolicyConfig{}) {
		o.Policy = DefaultPolicy()
	}
	if err := o.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	switch o.ReadPolicy {
	case "":
		o.ReadPolicy = ReadFast
	case ReadFast, ReadVote:
	default:
		return nil, fmt.Errorf("read policy %q: use fast or vote", o.ReadPolicy)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	switch o.Consistency {
	case "":
		o.Consistency = ConsistencyBitmap
		if a.layout.Parity > 0 {
			o.Consistency = ConsistencyJournal
		}
	case ConsistencyBitmap, ConsistencyResync, ConsistencyJournal:
	default:
		return nil, fmt.Errorf("%w: %q: use %s, %s or %s", ErrBadConsistency, o.Consistency, ConsistencyJournal, ConsistencyBitmap, ConsistencyResync)
	}
	v := &Volume{
		geo:         newGeometry(a.layout, a.base.Chunk, a.base.Size),
		base:        a.base,
		members:     make([]*member, a.layout.Members),
		log:         log,
		now:         o.Now,
		onEvent:     o.OnEvent,
		readPolicy:  o.ReadPolicy,
		consistency: o.Consistency,
		stop:        make(chan struct{}),
		generation:  a.base.Generation,
		opts:        o,
		work:        make(chan struct{}, 1),
	}
	v.intent = newIntentLog(v, o.Consistency)
	v.journal = newJournal(v, o.Consistency)
	chunk := int(v.geo.chunk)
	v.bufs.New = func() any { b := blockdev.AllocAligned(chunk); return &b }
	if a.layout.Parity > 0 {
		v.codec, err = newCodec(a.layout.Data, a.layout.Parity)
		if err != nil {
			return nil, fmt.Errorf("reed-solomon %d+%d: %w", a.layout.Data, a.layout.Parity, err)
		}
	}
	states := make([]MemberState, a.layout.Members)
	for slot, f := range a.current {
		if f == nil {
			states[slot] = Removed
			continue
		}
		m := newMember(slot, f.dir, o)
		err := m.open(v.geo.memberSize(), f.label)
		if err == nil {
			err = m.loadCounters()
		}
		if err != nil {
			v.closeMembers()
			return nil, fmt.Errorf("open member %d in %s: %w", slot, f.dir, err)
		}
		v.members[slot] = m
		events, err := m.loadEvents()
		if err != nil {
			v.closeMembers()
			return nil, fmt.Errorf("member %d in %s: %w", slot, f.dir, err)
		}
		if len(events) > len(v.events) {
			v.events = events // the fullest history among the members
		}
	}
	for _, f := range a.behind {
		m := v.members[f.label.Slot]
		m.label.Generation = v.generation
		if err := m.m.Meta.SetLabel(m.label.Encode()); err != nil {
			v.closeMembers()
			return nil, fmt.Errorf("bring member %d's label up to date: %w", m.slot, err)
		}
		log.Warn("member's label brought up to date: a crash cut short the generation change that would have written it",
			"slot", m.slot, "dir", m.dir, "generation", v.generation)
	}
	resume, err := v.loadMembership(a, states)
	if err != nil {
		v.closeMembers()
		return nil, err
	}
	v.policy = NewPolicy(o.Policy, a.layout, states)
	v.refreshRouting()
	var missing []int
	for slot, m := range v.members {
		if m == nil {
			missing = append(missing, slot)
		}
	}
	if len(missing) > 0 {
		// Writes from now on miss the absent members: a new generation
		// makes them stale, so that they are never taken for current.
		err := v.record(Event{Time: v.now(), Slot: -1, Kind: "assemble", Old: ArrayOptimal, New: ArrayDegraded,
			Reason: fmt.Sprintf("assembled without slots %v", missing)}, true)
		if err != nil {
			v.closeMembers()
			return nil, err
		}
	}
	if err := errors.Join(v.intent.load(), v.lost.load(v.members)); err != nil {
		v.closeMembers()
		return nil, err
	}
	unclean, err := v.wasUnclean()
	if err == nil {
		err = v.loadMissed(unclean)
	}
	if err == nil && unclean {
		err = v.recoverUnclean(o.Consistency)
	}
	if err == nil {
		err = v.resumeRebuild(resume)
	}
	if err != nil {
		v.closeMembers()
		return nil, err
	}
	if !o.NoMonitor {
		v.monitoring.Go(v.monitor)
	}
	return v, nil
}

// open opens the member's directory and checks that it still holds the
// member with the given label.
func (m *member) open(capacity int64, want Label) error {
	bm, err := blockdev.OpenMember(m.dir, m.opts.Direct)
	if err != nil {
		return err
	}
	fail := func(err error) error { bm.Close(); return err }
	raw, err := bm.Meta.Label()
	if err != nil {
		return fail(err)
	}
	l, err := DecodeLabel(raw)
	if err != nil {
		return fail(err)
	}
	if l.MemberUUID != want.MemberUUID || l.ArrayUUID != want.ArrayUUID || l.Generation != want.Generation {
		return fail(fmt.Errorf("%w: the directory now holds member %s of array %s at generation %d, not member %s at %d",
			ErrForeignMember, l.MemberUUID, l.ArrayUUID, l.Generation, want.MemberUUID, want.Generation))
	}
	if bm.Data.Size() < capacity {
		return fail(fmt.Errorf("%w: data file holds %d bytes, the layout needs %d", ErrCorruptLabel, bm.Data.Size(), capacity))
	}
	dev := bm.Data
	if m.opts.Wrap != nil {
		dev = m.opts.Wrap(m.slot, m.dir, dev)
	}
	m.m, m.label, m.raw, m.dev = bm, l, dev, blockdev.NewChecked(dev, bm.Sums)
	return nil
}

// reopen opens a closed member again and probes it. m.mu is held.
func (m *member) reopen(capacity int64) error {
	if err := m.open(capacity, m.label); err != nil {
		return err
	}
	if _, err := m.raw.ReadAt(make([]byte, blockdev.BlockSize), 0); err != nil {
		m.m.Close()
		return fmt.Errorf("probe after reopening: %w", err)
	}
	m.closed.Store(false)
	return nil
}

// restart closes and reopens a member, re-reading and checking its label,
// probes it, and reports the outcome to the policy. I/O to the member waits
// meanwhile.
func (v *Volume) restart(slot int, why string) {
	v.pmu.Lock()
	m := v.members[slot] // a failover may replace it meanwhile
	v.pmu.Unlock()
	if m == nil {
		return
	}
	m.mu.Lock()
	if m.closed.Load() || m.retired.Load() {
		m.mu.Unlock()
		return
	}
	err := errors.Join(m.saveCounters(), m.m.Close())
	m.closed.Store(true)
	if err == nil {
		err = m.reopen(v.geo.memberSize())
	}
	if err == nil {
		m.mu.Unlock()
		v.report(slot, func(p *Policy, now time.Time) []Action { return p.Restarted(slot, true, "", now) })
		if v.intent.hasMissed(slot) {
			v.report(slot, func(p *Policy, now time.Time) []Action { return p.Resync(slot) })
		}
		return
	}
	// Writes that find it closed wait until the policy has decided: the
	// member fenced (the others' generation bumped and synced) or, if the
	// array cannot do without it, kept while the volume refuses writes, so
	// that no write is acknowledged without it unrecorded.
	decided := make(chan struct{})
	m.pending.Store(&decided)
	m.mu.Unlock()
	v.log.Error("restart failed", "slot", slot, "cause", why, "err", err)
	v.report(slot, func(p *Policy, now time.Time) []Action { return p.Restarted(slot, false, err.Error(), now) })
	close(decided)
	m.pending.Store(nil)
}

// newCodec returns the Reed-Solomon codec of a k+m stripe. Its parity bytes
// are part of the on-disk format: TestParityIsPinned guards them. It runs
// one goroutine per call, since the engine parallelises across stripes,
// which beats splitting a chunk of 64 KiB or less between goroutines.
func newCodec(k, m int, opts ...reedsolomon.Option) (reedsolomon.Encoder, error) {
	return reedsolomon.New(k, m, append([]reedsolomon.Option{reedsolomon.WithMaxGoroutines(1)}, opts...)...)
}

// Foreground counts the requests users have made (reads, writes,
// discards, flushes): background jobs that see it move yield to them.
func (v *Volume) Foreground() uint64 { return v.foreground.Load() }

// Note records an event in the history: about a member (a fault injected
// into it), or with slot -1 about the whole array (a background job started
// or finished).
func (v *Volume) Note(slot int, kind, reason string) error {
	return v.record(Event{Time: v.now(), Slot: slot, Kind: kind, Reason: reason}, false)
}

// Size is the volume's size in bytes.
func (v *Volume) Size() int64 { return v.geo.size }

// Layout is the volume's layout.
func (v *Volume) Layout() Layout { return v.geo.Layout }

// Chunk is the volume's chunk size in bytes.
func (v *Volume) Chunk() int64 { return v.geo.chunk }

// Label returns the array's identity: the label of a current member with the
// member-specific fields cleared.
func (v *Volume) Label() Label {
	l := v.base
	l.MemberUUID, l.Slot = "", 0
	return l
}

// ReadAt reads len(p) bytes at volume offset off. Blocks that fail their
// checksum or whose member fails are served from redundancy. A read that
// reaches the end of the volume returns what lies before it and io.EOF. If
// the data cannot be proven good the read fails with an error wrapping
// ErrUnrecoverable; it never returns wrong data.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := v.admit("read", len(p), off); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, fmt.Errorf("%w: read at %d", ErrOutOfRange, off)
	}
	if off >= v.geo.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), v.geo.size-off))
	if e, lost := v.lost.overlap(off, int64(n)); lost {
		return 0, fmt.Errorf("%w: volume range %s was lost beyond redundancy (lockstep status lists it): write it to replace it", ErrUnrecoverable, e)
	}
	if err := v.forStripes(p[:n], off, false); err != nil {
		return 0, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at volume offset off. Any offset and length within the
// volume is accepted; a write beyond the end fails with ErrOutOfRange and
// writes nothing. Data is durable after the next Flush.
func (v *Volume) WriteAt(p []byte, off int64) (int, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := v.admit("write", len(p), off); err != nil {
		return 0, err
	}
	if off < 0 || off+int64(len(p)) > v.geo.size {
		return 0, fmt.Errorf("%w: %d bytes at %d, volume size %d", ErrOutOfRange, len(p), off, v.geo.size)
	}
	if err := v.forStripes(p, off, true); err != nil {
		return 0, err
	}
	if err := v.clearLost(off, int64(len(p))); err != nil {
		return len(p), fmt.Errorf("written, but the lost range it replaced is still recorded: %w", err)
	}
	return len(p), nil
}

// Flush makes every write that returned before it durable on the members,
// with their checksums. It fails if the members that synced are too few to
// serve the data.
func (v *Volume) Flush() error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := v.admit("flush", 0, 0); err != nil {
		return err
	}
	return v.flush()
}

// admit refuses a request while the volume is closed or suspended. v.mu is
// held.
func (v *Volume) admit(what string, n int, off int64) error {
	switch what {
	case "read", "write", "discard", "flush":
		v.foreground.Add(1)
	}
	if v.closed {
		return ErrClosed
	}
	if v.suspended.Load() {
		return fmt.Errorf("%w: %s of %d bytes at %d", ErrSuspended, what, n, off)
	}
	return nil
}

// flush syncs every member that takes writes, with its counters, then
// lets the write-intent log forget the regions it made durable.
func (v *Volume) flush() error {
	epoch := v.intent.flushBegun()
	journaled := v.journal.flushBegun()
	errs := make([]error, len(v.members))
	ok := make([]bool, len(v.members))
	var wg sync.WaitGroup
	for i, m := range v.members {
		if m != nil && m.writable.Load() {
			// A member being rebuilt is synced, but cannot serve yet.
			ok[i] = m.cursor.Load() == whole
			wg.Go(func() {
				m.mu.RLock()
				defer m.mu.RUnlock()
				if m.closed.Load() {
					errs[i] = errMissing
					return
				}
				errs[i] = errors.Join(m.saveCounters(), m.dev.Sync())
			})
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			ok[i] = false
			v.members[i].ctr.write.Add(1)
			v.log.Warn("member failed to sync", "slot", i, "err", err)
			v.report(i, func(p *Policy, now time.Time) []Action { return p.IOError(i, now) })
		}
	}
	if !v.geo.Survives(ok) {
		return fmt.Errorf("%w: flush reached too few members: %w", ErrUnrecoverable, errors.Join(errs...))
	}
	v.intent.flushed(epoch)
	v.journal.flushed(journaled)
	return nil
}

// Close flushes and closes the volume and its members.
func (v *Volume) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	v.closed = true
	close(v.stop)
	v.monitoring.Wait()
	var errs []error
	for _, j := range v.jobs {
		if m := v.members[j.slot]; m != nil && m.label.MemberUUID == j.uuid {
			errs = append(errs, v.saveRebuild(j, m))
		}
	}
	err := errors.Join(append(errs, v.flush())...)
	if err == nil {
		err = v.markClean()
	}
	return errors.Join(err, v.closeMembers())
}

func (v *Volume) closeMembers() error {
	var errs []error
	for _, m := range v.members {
		if m == nil || m.m == nil {
			continue
		}
		v.dropSource(m, nil)
		m.mu.Lock()
		if !m.closed.Load() {
			errs = append(errs, m.saveCounters(), m.m.Close())
			m.closed.Store(true)
		}
		m.mu.Unlock()
	}
	return errors.Join(errs...)
}

// getBuf returns a pooled chunk-sized buffer cut to n bytes.
func (v *Volume) getBuf(n int64) []byte { return (*v.bufs.Get().(*[]byte))[:n] }

// putBuf returns buffers taken with getBuf.
func (v *Volume) putBuf(bs ...[]byte) {
	for _, b := range bs {
		b = b[:cap(b)]
		v.bufs.Put(&b)
	}
}

// stripeLocks hands out one reader/writer lock per stripe in use.
type stripeLocks struct {
	mu    sync.Mutex
	locks map[int64]*stripeLock
}

type stripeLock struct {
	sync.RWMutex
	refs int
}

// lock takes stripe s shared (reads) or exclusive (writes) and returns the
// function that releases it.
func (l *stripeLocks) lock(s int64, exclusive bool) func() {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[int64]*stripeLock{}
	}
	sl := l.locks[s]
	if sl == nil {
		sl = &stripeLock{}
		l.locks[s] = sl
	}
	sl.refs++
	l.mu.Unlock()
	if exclusive {
		sl.Lock()
	} else {
		sl.RLock()
	}
	return func() {
		if exclusive {
			sl.Unlock()
		} else {
			sl.RUnlock()
		}
		l.mu.Lock()
		if sl.refs--; sl.refs == 0 {
			delete(l.locks, s)
		}
		l.mu.Unlock()
	}
}

// Crash closes the members as a killed process leaves them: nothing is
// flushed, and the array is not marked clean, so that the next Open
// recovers. The volume is unusable afterwards. It is for tests and
// benchmarks of crash recovery that do without a child process to kill.
func (v *Volume) Crash() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	close(v.stop)
	v.monitoring.Wait()
	for _, m := range v.members {
		if m == nil {
			continue
		}
		// The member a replacement copies from too: a crash forgets it.
		for _, c := range []*member{m.source.Swap(nil), m} {
			if c != nil && !c.closed.Load() {
				c.m.Data.Close()
				c.m.Meta.Close()
				c.closed.Store(true)
			}
		}
	}
}
