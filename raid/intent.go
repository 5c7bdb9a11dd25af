package raid

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/lockstepfs/lockstep/blockdev"
)

// Consistency is how a volume keeps its copies and parity in agreement
// across a crash (DESIGN.md "Consistency").
type Consistency string

// Consistency policies, by md's names.
const (
	// ConsistencyResync records nothing while writing; after an unclean
	// shutdown it re-checks every stripe of the volume.
	ConsistencyResync Consistency = "resync"
	// ConsistencyBitmap records each region durably before writing to it
	// (a write-intent log) and clears it lazily once its writes are
	// flushed; after an unclean shutdown it re-checks only those regions.
	ConsistencyBitmap Consistency = "bitmap"
)

// regionBytes is about how much volume data one write-intent region covers:
// small enough that a resync after a crash is short, large enough that a
// sequential writer marks a new region (one synced metadata write on every
// member) only every few MiB.
const regionBytes = 4 << 20

// Metadata keys of the write-intent log, the regions ever written, and the
// shutdown state.
var (
	prefixIntent  = []byte("intent/")
	prefixWritten = []byte("written/")
	keyState      = []byte("state")
)

// Values of keyState: a member whose state is not clean when it is opened
// was in use when its array last stopped without closing.
var (
	stateOpen  = []byte("open")
	stateClean = []byte("clean")
)

func intentKey(region int64) []byte { return regionKey(prefixIntent, region) }

func writtenKey(region int64) []byte { return regionKey(prefixWritten, region) }

func regionKey(prefix []byte, region int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefix...), uint64(region))
}

// scanRegions calls fn with each region recorded under prefix in a
// member's metadata.
func scanRegions(m *member, prefix []byte, fn func(region int64)) error {
	return m.m.Meta.Scan(prefix, func(k, _ []byte) error {
		if len(k) == len(prefix)+8 {
			fn(int64(binary.BigEndian.Uint64(k[len(prefix):])))
		}
		return nil
	})
}

// intentLog is the write-intent log: the regions that may hold writes not
// yet flushed, durable in every member that takes writes before any write
// to them goes out. It also keeps, whatever the policy, the set of regions
// ever written, marked the same way before a region's first write, which
// is what a resync after a crash has to look at without the log.
type intentLog struct {
	v       *Volume
	enabled bool  // the policy records intents (bitmap, journal); resync does not
	stripes int64 // stripes per region

	mu      sync.Mutex
	written map[int64]bool    // regions ever written, marked in the members' metadata
	regions map[int64]*region // intents marked in the members' metadata
	next    *markRound        // regions waiting to be marked, nil if none
	marking bool              // a round is being committed
	epoch   uint64            // flushes begun
	began   map[int64]uint64  // writes begun, by region: a discard forgets a region only if none began meanwhile
	absent  []int             // slots away that may come back: writes mark what they miss
	missed  map[int]map[int64]bool
}

// region is one marked region: the writes under way and the flush epoch of
// the last write that began.
type region struct {
	inflight int
	epoch    uint64
}

// markRound is one synced commit of new marks, which every writer that
// needs a region in it waits for.
type markRound struct {
	regions map[int64]bool
	absent  []int // the slots whose misses it marks
	done    chan struct{}
	err     error
}

func newIntentLog(v *Volume, c Consistency) *intentLog {
	return &intentLog{v: v, enabled: c != ConsistencyResync, stripes: max(1, regionBytes/v.geo.stripeData()),
		regions: map[int64]*region{}, written: map[int64]bool{}, began: map[int64]uint64{}, missed: map[int]map[int64]bool{}}
}

// load reads the regions ever written from the members.
func (l *intentLog) load() error {
	for _, m := range l.v.members {
		if m == nil {
			continue
		}
		if err := scanRegions(m, prefixWritten, func(r int64) { l.written[r] = true }); err != nil {
			return fmt.Errorf("member %d written regions: %w", m.slot, err)
		}
	}
	return nil
}

// writtenRegions lists the regions ever written.
func (l *intentLog) writtenRegions() []int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]int64, 0, len(l.written))
	for r := range l.written {
		out = append(out, r)
	}
	return out
}

// regionsOf lists the regions that stripes [first, last] fall in.
func (l *intentLog) regionsOf(first, last int64) []int64 {
	var out []int64
	for r := first / l.stripes; r <= last/l.stripes; r++ {
		out = append(out, r)
	}
	return out
}

// begin marks the regions durably (if they are not already) before a write
// to them, and counts the write as under way until end.
func (l *intentLog) begin(regions []int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// A region marked for us may be cleared by a flush before we count
	// ourselves in it: go round until every one is marked with l.mu held.
	for round := l.queue(regions); round != nil; round = l.queue(regions) {
		if err := l.await(round); err != nil {
			return err
		}
	}
	for _, r := range regions {
		l.began[r]++
	}
	if !l.enabled {
		return nil
	}
	for _, r := range regions {
		reg := l.regions[r]
		reg.inflight++
		reg.epoch = l.epoch
	}
	return nil
}

// queue adds the regions not yet marked to the next round and returns it,
// or nil if every region is marked. l.mu is held.
func (l *intentLog) queue(regions []int64) *markRound {
	var round *markRound
	for _, r := range regions {
		if !l.needsMark(r) {
			continue
		}
		if l.next == nil {
			l.next = &markRound{regions: map[int64]bool{}, done: make(chan struct{})}
		}
		l.next.regions[r] = true
		round = l.next
	}
	return round
}

// needsMark reports whether a write to region r must wait for marks: its
// intent, its place in the written set, or its miss by an absent slot.
// l.mu is held.
func (l *intentLog) needsMark(r int64) bool {
	if _, ok := l.regions[r]; !(ok || !l.enabled) || !l.written[r] {
		return true
	}
	for _, s := range l.absent {
		if !l.missed[s][r] {
			return true
		}
	}
	return false
}

// await waits until round is committed: it commits it itself, with any
// round that gathers meanwhile, if no other writer is committing. l.mu is
// held, and released while waiting.
func (l *intentLog) await(round *markRound) error {
	if l.marking {
		l.mu.Unlock()
		<-round.done
		l.mu.Lock()
		return round.err
	}
	l.marking = true
	for l.next != nil {
		r := l.next
		l.next = nil
		r.absent = slices.Clone(l.absent)
		l.mu.Unlock()
		r.err = l.commit(r.regions, r.absent)
		l.mu.Lock()
		if r.err == nil {
			for reg := range r.regions {
				l.written[reg] = true
				if l.enabled && l.regions[reg] == nil {
					l.regions[reg] = &region{epoch: l.epoch}
				}
				for _, s := range r.absent {
					l.missedBy(s)[reg] = true
				}
			}
		}
		close(r.done)
	}
	l.marking = false
	return round.err
}

// beganCounts returns how many writes have begun in each region.
func (l *intentLog) beganCounts(regions []int64) []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]uint64, len(regions))
	for i, r := range regions {
		out[i] = l.began[r]
	}
	return out
}

// forgetWritten drops from the written set the regions a discard has
// emptied whole, unless a write began in one since snap (taken before the
// discard, whose own begins are own). The record is deleted with l.mu held,
// so that a write that begins afterwards marks the region again after it.
func (l *intentLog) forgetWritten(regions []int64, snap []uint64, own map[int64]uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var gone []int64
	for i, r := range regions {
		if l.written[r] && l.began[r]-snap[i] == own[r] {
			gone = append(gone, r)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	err := l.v.commitAll("forget discarded regions", false, func(b *blockdev.Batch) {
		for _, r := range gone {
			b.Delete(writtenKey(r))
		}
	})
	if err != nil {
		return err
	}
	for _, r := range gone {
		delete(l.written, r)
	}
	return nil
}

// end counts writes to the regions as done.
func (l *intentLog) end(regions []int64) {
	if !l.enabled {
		return
	}
	l.mu.Lock()
	for _, r := range regions {
		l.regions[r].inflight--
	}
	l.mu.Unlock()
}

// commit marks regions written (and their intents, if the policy keeps
// them) in every member that takes writes, synced. It fails only if too few
// members hold the marks for the array to find them after a crash.
func (l *intentLog) commit(regions map[int64]bool, absent []int) error {
	return l.v.commitAll("mark write intents", true, func(b *blockdev.Batch) {
		for r := range regions {
			if l.enabled {
				b.Set(intentKey(r), nil)
			}
			b.Set(writtenKey(r), nil)
			for _, s := range absent {
				b.Set(regionKey(missedPrefix(s), r), nil)
			}
		}
	})
}

// missedBy returns the regions slot is known to have missed. l.mu is held.
func (l *intentLog) missedBy(slot int) map[int64]bool {
	if l.missed[slot] == nil {
		l.missed[slot] = map[int64]bool{}
	}
	return l.missed[slot]
}

// setAbsent records which slots are away and may come back. A slot newly
// away is taken to have missed, besides what is written from now on, the
// regions that writes under way may have touched: the intents (or, with
// no intents kept, every region written), marked durably before anything
// else is written.
func (l *intentLog) setAbsent(slots []int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var fresh []int
	for _, s := range slots {
		if !slices.Contains(l.absent, s) {
			fresh = append(fresh, s)
		}
	}
	l.absent = slices.Clone(slots)
	if len(fresh) == 0 {
		return nil
	}
	var touched []int64
	if l.enabled {
		for r := range l.regions {
			touched = append(touched, r)
		}
	} else {
		for r := range l.written {
			touched = append(touched, r)
		}
	}
	if len(touched) == 0 {
		return nil
	}
	err := l.v.commitAll("mark regions missed", true, func(b *blockdev.Batch) {
		for _, s := range fresh {
			for _, r := range touched {
				b.Set(regionKey(missedPrefix(s), r), nil)
			}
		}
	})
	if err != nil {
		return err
	}
	for _, s := range fresh {
		for _, r := range touched {
			l.missedBy(s)[r] = true
		}
	}
	return nil
}

// failedWrite records, durably, that slot missed regions by failing its
// part of a write that the others took. Its checksums would catch the stale
// blocks, but until they are rewritten the others hold the only good copy:
// once a restart brings the member back it is resynced over them.
func (l *intentLog) failedWrite(slot int, regions []int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var fresh []int64
	for _, r := range regions {
		if !l.missedBy(slot)[r] {
			fresh = append(fresh, r)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	err := l.v.commitAll("mark regions missed by a failed write", true, func(b *blockdev.Batch) {
		for _, r := range fresh {
			b.Set(regionKey(missedPrefix(slot), r), nil)
		}
	})
	if err != nil {
		return err
	}
	for _, r := range fresh {
		l.missedBy(slot)[r] = true
	}
	return nil
}

// hasMissed reports whether slot is known to have missed any region.
func (l *intentLog) hasMissed(slot int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.missed[slot]) > 0
}

// forgetMissed drops what slot missed from memory, once it is resynced.
func (l *intentLog) forgetMissed(slot int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.missed, slot)
}

// flushBegun starts a flush epoch and returns it.
func (l *intentLog) flushBegun() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch++
	return l.epoch
}

// flushed clears, lazily, the regions whose writes the flush of epoch e
// made durable and that saw no write since the flush before it: a region
// written on and off keeps its mark rather than paying a synced mark again.
func (l *intentLog) flushed(e uint64) {
	if !l.enabled {
		return
	}
	l.mu.Lock()
	var idle []int64
	for r, reg := range l.regions {
		if reg.inflight == 0 && reg.epoch+1 < e {
			idle = append(idle, r)
		}
	}
	l.mu.Unlock()
	if len(idle) == 0 {
		return
	}
	// Unsynced: a mark that outlives a crash costs only a needless resync.
	err := l.v.commitAll("clear write intents", false, func(b *blockdev.Batch) {
		for _, r := range idle {
			b.Delete(intentKey(r))
		}
	})
	if err != nil {
		l.v.log.Warn("write intents not cleared; they are resynced after a crash", "err", err)
		return
	}
	l.mu.Lock()
	for _, r := range idle {
		if reg := l.regions[r]; reg != nil && reg.inflight == 0 && reg.epoch+1 < e {
			delete(l.regions, r)
		}
	}
	l.mu.Unlock()
}

// commitAll commits the same metadata batch, filled by fill, in every open
// member that takes writes (synced if sync), as eachWritable does.
func (v *Volume) commitAll(what string, sync bool, fill func(b *blockdev.Batch)) error {
	return v.eachWritable(what, func(m *member) error {
		b := m.m.Meta.NewBatch()
		fill(b)
		return b.Commit(sync)
	})
}

// eachWritable runs fn on every open member that takes writes, in parallel.
// Failures are counted as write errors against their members; the call
// fails only if the members that succeeded are too few to serve the data.
func (v *Volume) eachWritable(what string, fn func(m *member) error) error {
	errs := make([]error, len(v.members))
	ok := make([]bool, len(v.members))
	parallel(len(v.members), func(slot int) {
		m := v.members[slot]
		if m == nil || !m.writable.Load() {
			return
		}
		m.mu.RLock()
		defer m.mu.RUnlock()
		if m.closed.Load() {
			return
		}
		if errs[slot] = fn(m); errs[slot] == nil {
			ok[slot] = m.cursor.Load() == whole // a member being rebuilt cannot serve yet
		}
	})
	for slot, err := range errs {
		if err != nil {
			v.members[slot].ctr.write.Add(1)
			v.log.Warn(what+" failed on a member", "slot", slot, "err", err)
		}
	}
	if !v.geo.Survives(ok) {
		return fmt.Errorf("%w: %s reached too few members: %w", ErrUnrecoverable, what, errors.Join(errs...))
	}
	return nil
}
