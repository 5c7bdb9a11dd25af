package raid

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
)

// A rebuild fills a new member (a hot spare taken by a failover, or one an
// operator put in with Replace) stripe by stripe behind a cursor, from the
// rest of the array. A resync does the same for a member that went away and
// came back, over only the regions written while it was gone. Either way
// the member takes every write at once, serves reads behind its cursor, and
// counts for nothing (quorum, flush) until it is done. The cursor is
// checkpointed, after the member is synced, so that a rebuild cut short by
// a crash resumes where it was; each step is idempotent.

// Kinds of rebuild.
const (
	KindRebuild = "rebuild" // a new member: every written region
	KindResync  = "resync"  // a returning member: the regions it missed
)

// rebuildKey names the checkpoint of the rebuild of a slot (a job record).
func rebuildKey(slot int) []byte {
	return fmt.Appendf(slices.Clone(prefixJob), "rebuild/%d", slot)
}

// A rebuild is checkpointed every checkpointEvery, or each time it has done
// another 1/checkpointParts of its work if that comes sooner: that bounds
// the work a crash costs it, and the stripes whose writes are journaled for
// being past the checkpoint (journal.needs). But a checkpoint syncs the
// member being rebuilt and commits to every member, which holds up the
// disks for a while (an unthrottled rebuild of 256 MiB a member took 1.6
// to 2.3 times as long with one every sixteenth): one that is due for its
// share of the work waits until checkpointSpacing times as long as the
// last took has gone by, or checkpointWaitMost if that is less, so that
// checkpoints take about a twentieth of a fast rebuild's time.
var (
	checkpointEvery    = 10 * time.Second
	checkpointParts    = int64(16)
	checkpointSpacing  = time.Duration(20)
	checkpointWaitMost = time.Second
)

// rebuildBatch is how many regions a rebuild step does, by default.
var rebuildBatch = 16

// RegionsInFlight is how many regions a rebuild or scrub step works on at
// once. A step of more regions than that starts the next as each ends, so
// that some regions' reads overlap others' writes or checks, instead of
// every region reading, then every region writing or checking.
const RegionsInFlight = 8

// rebuild is the rebuild or resync under way.
type rebuild struct {
	slot    int
	uuid    string  // the member being rebuilt
	kind    string  // KindRebuild or KindResync
	regions []int64 // sorted regions still to do
	done    int64   // volume bytes done
	total   int64   // volume bytes in all
	started time.Time
	saved   time.Time     // last checkpoint
	took    time.Duration // how long the last checkpoint took to store
	atDone  int64         // done at the last checkpoint
	lost    int64         // bytes found beyond redundancy
}

// errRoutingChanged says a rebuild step met unreadable data while members
// came or went; it is retried.
var errRoutingChanged = errors.New("members changed state during the step")

// rebuildCheckpoint is the stored form of a rebuild.
type rebuildCheckpoint struct {
	Slot    int       `json:"slot"`
	UUID    string    `json:"uuid"`
	Kind    string    `json:"kind"`
	Cursor  int64     `json:"cursor"` // first stripe not rebuilt
	Done    int64     `json:"done"`
	Total   int64     `json:"total"`
	Started time.Time `json:"started"`
	Lost    int64     `json:"lost,omitempty"`

	back bool // not stored: the member came back from away and starts over
}

// RebuildStatus is the rebuild or resync under way.
type RebuildStatus struct {
	Slot    int       `json:"slot"`
	Kind    string    `json:"kind"`
	Done    int64     `json:"done_bytes"`
	Total   int64     `json:"total_bytes"`
	Started time.Time `json:"started"`
	Lost    int64     `json:"lost_bytes,omitempty"`
}

// Work returns a channel that is signalled when a rebuild or resync is
// waiting to be run (with RebuildStep).
func (v *Volume) Work() <-chan struct{} { return v.work }

func (v *Volume) signalWork() {
	select {
	case v.work <- struct{}{}:
	default:
	}
}

// Rebuilds returns the rebuilds and resyncs under way, the one being run
// first.
func (v *Volume) Rebuilds() []RebuildStatus {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	return v.rebuildsLocked()
}

// rebuildsLocked is Rebuilds with v.pmu held.
func (v *Volume) rebuildsLocked() []RebuildStatus {
	var out []RebuildStatus
	for _, j := range v.jobs {
		out = append(out, RebuildStatus{Slot: j.slot, Kind: j.kind, Done: j.done, Total: j.total, Started: j.started, Lost: j.lost})
	}
	return out
}

// shardOf returns which shard of stripe s the member in slot holds.
func (g geometry) shardOf(slot int, s int64) int {
	if g.Parity == 0 {
		return slot
	}
	n := int64(g.Members)
	return int(((int64(slot)-s)%n + n) % n)
}

// stripesBytes is the volume data in stripes [s0, s1).
func (v *Volume) stripesBytes(s0, s1 int64) int64 {
	sd := v.geo.stripeData()
	return min(s1*sd, v.geo.size) - min(s0*sd, v.geo.size)
}

// RegionBytes is the volume data in region r.
func (v *Volume) RegionBytes(r int64) int64 {
	sd := v.geo.stripeData()
	lo := min(r*v.intent.stripes*sd, v.geo.size)
	return min((r+1)*v.intent.stripes*sd, v.geo.size) - lo
}

// RebuildStep does the next part of the rebuild or resync under way and
// reports how many volume bytes it covered and whether any work remains.
// It covers up to budget volume bytes (0 or less: a few regions): whole
// regions, in parallel, or, for less than a region, a run of stripes of
// one.
// When the last region is done the member is brought online. It is meant
// to be called by one background runner, which throttles it.
func (v *Volume) RebuildStep(budget int64) (n int64, more bool, err error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := v.admit("rebuild", 0, 0); err != nil {
		return 0, false, err
	}
	v.pmu.Lock()
	var j *rebuild
	var st MemberState
	if len(v.jobs) > 0 {
		j = v.jobs[0]
		st = v.policy.State(j.slot)
	}
	v.pmu.Unlock()
	if j == nil {
		return 0, false, nil
	}
	m := v.members[j.slot]
	if st != Rebuilding || m == nil || m.label.MemberUUID != j.uuid {
		// The member was fenced, replaced or went away meanwhile: its
		// rebuild ends. Its checkpoint stays, so that a member that comes
		// back knows it was never rebuilt whole; the slot's next rebuild
		// writes over it.
		v.dropJob(j)
		if m != nil && m.label.MemberUUID == j.uuid {
			v.dropSource(m, nil)
		}
		return 0, v.moreJobs(), nil
	}
	// A checkpoint that is due records the progress of the steps before
	// this one while this one runs: syncing the member and committing to
	// every member takes long enough to leave the disks idle otherwise.
	var saving chan error
	if v.checkpointDue(j) {
		cp := v.snapshotRebuild(j, m)
		saving = make(chan error, 1)
		go func() {
			start := time.Now()
			err := v.storeRebuild(j.slot, m, &cp)
			v.pmu.Lock()
			j.took = time.Since(start)
			v.pmu.Unlock()
			saving <- err
		}()
	}
	saved := func() error {
		if saving == nil {
			return nil
		}
		err := <-saving
		saving = nil
		return err
	}
	if len(j.regions) > 0 {
		rs, region := v.intent.stripes, v.intent.stripes*v.geo.stripeData()
		if budget <= 0 {
			budget = int64(rebuildBatch) * region
		}
		// Whole regions, several at once to keep every member's queue
		// busy; or a run of stripes of the first.
		count := int(min(int64(len(j.regions)), budget/region))
		spans := make([][2]int64, 0, count)
		cursor := min(m.cursor.Load(), v.geo.stripes)
		for _, r := range j.regions[:count] {
			spans = append(spans, [2]int64{max(r*rs, cursor), min((r+1)*rs, v.geo.stripes)})
		}
		if count == 0 {
			r := j.regions[0]
			s0 := max(r*rs, cursor)
			spans = append(spans, [2]int64{s0, min(s0+max(1, budget/v.geo.stripeData()), (r+1)*rs, v.geo.stripes)})
		}
		lost := make([]int64, len(spans))
		errs := make([]error, len(spans))
		parallelUpTo(len(spans), RegionsInFlight, func(i int) {
			s0, s1 := spans[i][0], spans[i][1]
			if lost[i], errs[i] = v.rebuildStripes(m, s0, s1, j.kind); errs[i] != nil {
				errs[i] = fmt.Errorf("rebuild member %d, stripes %d to %d: %w", j.slot, s0, s1-1, errs[i])
			}
		})
		if err := errors.Join(append(errs, saved())...); err != nil {
			return 0, true, err
		}
		end := spans[len(spans)-1][1]
		v.pmu.Lock()
		for i, sp := range spans {
			n += v.stripesBytes(sp[0], sp[1])
			j.lost += lost[i]
		}
		if end >= min((j.regions[len(spans)-1]+1)*rs, v.geo.stripes) {
			j.regions = j.regions[len(spans):]
		}
		j.done += n
		next := end
		if len(j.regions) > 0 {
			next = max(end, j.regions[0]*rs)
		} else {
			next = v.geo.stripes
		}
		v.pmu.Unlock()
		// Past what was just written; and what lies between it and the
		// next region is not written: it is current already.
		m.cursor.Store(max(m.cursor.Load(), next))
	}
	if err := saved(); err != nil {
		return n, true, err
	}
	if len(j.regions) > 0 {
		return n, true, nil
	}
	return n, v.moreJobs(), v.finishRebuild(j, m)
}

// checkpointDue reports whether the rebuild j has gone long enough, or far
// enough, since its last checkpoint to take another.
func (v *Volume) checkpointDue(j *rebuild) bool {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	since := time.Since(j.saved)
	return len(j.regions) > 0 && (since >= checkpointEvery ||
		j.done-j.atDone >= j.total/checkpointParts && since >= min(checkpointSpacing*j.took, checkpointWaitMost))
}

// dropJob forgets the rebuild j.
func (v *Volume) dropJob(j *rebuild) {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	v.jobs = slices.DeleteFunc(v.jobs, func(x *rebuild) bool { return x == j })
}

// moreJobs reports whether rebuilds wait to be run.
func (v *Volume) moreJobs() bool {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	return len(v.jobs) > 0
}

// rebuildStripes fills the member's chunks of stripes [s0, s1) from the
// rest of the array, under the stripes' locks; the caller moves its cursor
// past them. Blocks beyond redundancy are recorded as lost, and made to fail
// their checksums on the member so that they are never served. It returns
// the bytes lost.
func (v *Volume) rebuildStripes(m *member, s0, s1 int64, kind string) (int64, error) {
	g := v.geo
	if s0 >= s1 {
		return 0, nil
	}
	for s := s0; s < s1; s++ {
		defer v.locks.lock(s, true)()
	}
	t := newTally(g.Members, false, false)
	jobs := make([]job, 0, s1-s0)
	writes := make([]memIO, 0, s1-s0)
	var bufs [][]byte
	defer func() { v.putBuf(bufs...) }()
	get := func() []byte { b := v.getBuf(g.chunk); bufs = append(bufs, b); return b }
	fast := v.rebuildFast(m, s0, s1, get)
	for s := s0; s < s1; s++ {
		if fast[s-s0] != nil {
			continue
		}
		i := g.shardOf(m.slot, s)
		j := job{s: s}
		switch {
		case g.Parity == 0:
			j.spans = []span{{d: i / g.Copies, buf: get()}}
		case i < g.Data:
			j.spans = []span{{d: i, buf: get()}}
		default:
			for d := range g.Data {
				j.spans = append(j.spans, span{d: d, buf: get()})
			}
		}
		jobs = append(jobs, j)
	}
	routing := v.routing.Load()
	v.readJobs(jobs, t)
	if len(t.lost) > 0 && v.routing.Load() != routing {
		// A member came or went during the reads: what looked lost may
		// only have been out of reach. Try again with the new routing.
		return 0, errRoutingChanged
	}
	poison := map[int64][]bool{} // stripe -> blocks of the member's chunk that cannot be rebuilt
	for _, r := range t.lost {
		i := g.shardOf(m.slot, r.s)
		d := i
		if g.Parity == 0 {
			d = i / g.Copies
		}
		if r.d != d && i < g.Data*g.Copies {
			continue // another chunk of the stripe; the member's own was rebuilt
		}
		if poison[r.s] == nil {
			poison[r.s] = make([]bool, g.chunk/bs)
		}
		for b := r.off / bs; b < (r.off+r.n)/bs; b++ {
			poison[r.s][b] = true
		}
	}
	for s, buf := range fast {
		if buf != nil {
			writes = append(writes, memIO{slot: m.slot, off: (s0 + int64(s)) * g.chunk, buf: buf, own: true})
		}
	}
	for _, j := range jobs {
		s := j.s
		buf := j.spans[0].buf
		if i := g.shardOf(m.slot, s); g.Parity > 0 && i >= g.Data {
			shards := make([][]byte, g.Members)
			for d, sp := range j.spans {
				shards[d] = sp.buf
			}
			for p := range g.Parity {
				shards[g.Data+p] = get()
			}
			if err := v.codec.Encode(shards); err != nil {
				return 0, fmt.Errorf("encode stripe %d: %w", s, err)
			}
			buf = shards[i]
		}
		writes = append(writes, memIO{slot: m.slot, off: s * g.chunk, buf: buf, own: true})
	}
	v.do(writes, true)
	for _, w := range writes {
		if w.err != nil {
			return 0, fmt.Errorf("write the rebuilt data: %w", w.err)
		}
	}
	if err := v.poison(m, writes, poison); err != nil {
		return 0, err
	}
	lost := t.extents(g)
	var n int64
	for _, e := range lost {
		n += e.Len
	}
	return n, v.addLost(lost, fmt.Sprintf("%s of member %d", kind, m.slot))
}

// rebuildFast computes the member's chunks of stripes [s0, s1) (locked):
// copied from the member it replaces, if that still serves; or from just
// enough of the others (one copy, or Data chunks), all read in one go,
// merged per member. It returns each stripe's chunk, or nil where a read
// failed: those take the general read path, which proves every block and
// rebuilds what it can.
func (v *Volume) rebuildFast(m *member, s0, s1 int64, get func() []byte) [][]byte {
	g := v.geo
	out := make([][]byte, s1-s0)
	if m.source.Load() != nil {
		for i := range out {
			out[i] = get()
		}
		if v.copyFromSource(m, s0, out) {
			return out
		}
		clear(out)
	}
	shards := make([][][]byte, s1-s0)
	var ios []memIO
	var owner []int64 // stripe of each I/O
	var from []int
	if g.Parity > 0 {
		if from = v.rebuildSources(m.slot, s0, s1); len(from) < g.Data {
			return out // too few to reconstruct from: the general path says what is lost
		}
	}
	for s := s0; s < s1; s++ {
		target := g.shardOf(m.slot, s)
		if g.Parity == 0 {
			d := target / g.Copies
			for c := range g.Copies {
				if i := d*g.Copies + c; i != target && v.usable(g.Slot(s, i), false) {
					ios = append(ios, memIO{slot: g.Slot(s, i), off: s * g.chunk, buf: get(), bulk: true})
					owner = append(owner, s)
					break
				}
			}
			continue
		}
		sh := make([][]byte, g.Members) // nil: neither read nor wanted
		sh[target] = get()[:0]          // to be rebuilt
		for _, slot := range from {
			i := g.shardOf(slot, s)
			sh[i] = get()
			ios = append(ios, memIO{slot: slot, off: s * g.chunk, buf: sh[i], bulk: true})
			owner = append(owner, s)
		}
		shards[s-s0] = sh
	}
	v.do(ios, false)
	failed := map[int64]bool{}
	for k, io := range ios {
		if io.err != nil {
			failed[owner[k]] = true
		}
	}
	for k, io := range ios {
		if g.Parity == 0 && !failed[owner[k]] {
			out[owner[k]-s0] = io.buf
		}
	}
	if g.Parity == 0 {
		return out
	}
	need := make([]bool, g.Members)
	for s := s0; s < s1; s++ {
		sh, target := shards[s-s0], g.shardOf(m.slot, s)
		clear(need)
		need[target] = true
		if failed[s] || v.codec.ReconstructSome(sh, need) != nil {
			continue
		}
		out[s-s0] = sh[target]
	}
	return out
}

// rebuildSources picks the members a parity layout's fast rebuild of slot
// reads from for stripes [s0, s1): Data of those that take reads there
// (another member being rebuilt, only behind its cursor), the same ones for
// every stripe, so that each reads one run instead of runs broken wherever
// the parity rotation would skip it. Which members rest turns with s0, to
// share the load.
func (v *Volume) rebuildSources(slot int, s0, s1 int64) []int {
	g := v.geo
	from := make([]int, 0, g.Members)
	for k := range g.Members {
		other := int((s0 + int64(k)) % int64(g.Members))
		if other != slot && v.usable(other, false) && s1 <= v.members[other].cursor.Load() {
			from = append(from, other)
		}
	}
	return from[:min(len(from), g.Data)]
}

// poison records, for the blocks of the member that could not be rebuilt,
// checksums that their contents fail: they read as bad until rewritten.
func (v *Volume) poison(m *member, writes []memIO, blocks map[int64][]bool) error {
	if len(blocks) == 0 {
		return nil
	}
	g := v.geo
	m.mu.RLock()
	defer m.mu.RUnlock()
	for s, bad := range blocks {
		k := slices.IndexFunc(writes, func(w memIO) bool { return w.off == s*g.chunk })
		buf := writes[k].buf
		for b, lost := range bad {
			if !lost {
				continue
			}
			sum := ^blockdev.Checksum(buf[int64(b)*bs : int64(b+1)*bs])
			if err := m.m.Sums.Record((s*g.chunk)/bs+int64(b), []uint32{sum}); err != nil {
				return fmt.Errorf("mark unrebuildable blocks of member %d: %w", m.slot, err)
			}
		}
	}
	return nil
}

// saveRebuild checkpoints the rebuild j of member m, after syncing m, so
// that the checkpoint never runs ahead of the data. With m nil it drops
// j's checkpoint.
func (v *Volume) saveRebuild(j *rebuild, m *member) error {
	if m == nil {
		return v.storeRebuild(j.slot, nil, nil)
	}
	cp := v.snapshotRebuild(j, m)
	return v.storeRebuild(j.slot, m, &cp)
}

// snapshotRebuild takes the checkpoint of the rebuild j of member m as it
// stands, counting it as j's latest. No rebuild write below its cursor may
// still be under way.
func (v *Volume) snapshotRebuild(j *rebuild, m *member) rebuildCheckpoint {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	j.saved, j.atDone = time.Now(), j.done
	return rebuildCheckpoint{Slot: j.slot, UUID: j.uuid, Kind: j.kind, Cursor: m.cursor.Load(),
		Done: j.done, Total: j.total, Started: j.started, Lost: j.lost}
}

// storeRebuild syncs m, then stores cp as the checkpoint of the rebuild of
// slot and moves m's durable cursor up to it; with cp nil it drops the
// slot's checkpoint. Rebuild writes above cp's cursor may be under way: the
// sync covers every write that ended before it began.
func (v *Volume) storeRebuild(slot int, m *member, cp *rebuildCheckpoint) error {
	var val []byte
	if cp != nil {
		m.mu.RLock()
		err := m.dev.Sync()
		m.mu.RUnlock()
		if err != nil {
			return fmt.Errorf("sync member %d being rebuilt: %w", slot, err)
		}
		val, _ = json.Marshal(cp)
	}
	err := v.commitAll("checkpoint the rebuild", true, func(b *blockdev.Batch) {
		if val == nil {
			b.Delete(rebuildKey(slot))
		} else {
			b.Set(rebuildKey(slot), val)
		}
	})
	if err == nil && cp != nil {
		m.durable.Store(cp.Cursor)
	}
	return err
}

// finishRebuild brings a rebuilt member online: synced, given the regions
// ever written and the background jobs' records, the others' record of what
// it missed dropped, marked ONLINE in a new generation, and then its
// checkpoint dropped.
func (v *Volume) finishRebuild(j *rebuild, m *member) error {
	m.mu.RLock()
	err := m.dev.Sync()
	if err == nil {
		b := m.m.Meta.NewBatch()
		for _, r := range v.intent.writtenRegions() {
			b.Set(writtenKey(r), nil)
		}
		err = v.scanJobs("", func(k, val []byte) error {
			b.Set(slices.Clone(k), slices.Clone(val))
			return nil
		})
		if err == nil {
			err = b.Commit(true)
		}
	}
	m.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("finish the %s of member %d: %w", j.kind, j.slot, err)
	}
	if err := v.forgetMissed(j.slot); err != nil {
		return err
	}
	m.cursor.Store(whole)
	v.dropSource(m, nil)
	v.dropJob(j)
	v.pmu.Lock()
	acts := v.policy.Rebuilt(j.slot)
	took := time.Since(j.started)
	v.pmu.Unlock()
	reason := fmt.Sprintf("%s of %s done in %s", j.kind, FormatSize(j.total), took.Round(time.Millisecond))
	if j.lost > 0 {
		reason += fmt.Sprintf("; %s could not be rebuilt (see lockstep status)", FormatSize(j.lost))
	}
	v.log.Info("member "+j.kind+" done", "slot", j.slot, "bytes", j.total, "took", took, "lost_bytes", j.lost)
	v.refreshRouting()
	err = v.record(Event{Time: v.now(), Slot: j.slot, Kind: j.kind, Old: Rebuilding.String(), New: Online.String(), Reason: reason}, true)
	if err == nil {
		// Only now would a crash find it ONLINE; until now it would have
		// resumed from its checkpoint, dropped only now.
		m.durable.Store(whole)
		err = v.saveRebuild(j, nil)
	}
	return errors.Join(err, v.apply(acts))
}

// startRebuild sets up the rebuild (or resync, of the given regions) of the
// member now in slot and checkpoints it. The member is read nowhere ahead
// of its cursor already (v.mu is held exclusively, or the volume is being
// opened, or the member was away).
func (v *Volume) startRebuild(slot int, kind string, regions []int64, from rebuildCheckpoint) error {
	v.pmu.Lock()
	m := v.members[slot]
	v.pmu.Unlock()
	slices.Sort(regions)
	j := &rebuild{slot: slot, uuid: m.label.MemberUUID, kind: kind, started: time.Now()}
	for _, r := range regions {
		if s1 := min((r+1)*v.intent.stripes, v.geo.stripes); s1 > from.Cursor {
			j.regions = append(j.regions, r)
			j.total += v.stripesBytes(max(r*v.intent.stripes, from.Cursor), s1)
		}
	}
	if from.UUID == j.uuid && !from.Started.IsZero() { // resuming
		j.started, j.done, j.lost = from.Started, from.Done, from.Lost
		j.total += j.done
	}
	m.restart(from.Cursor)
	if len(j.regions) > 0 {
		m.cursor.Store(max(from.Cursor, j.regions[0]*v.intent.stripes))
	}
	v.pmu.Lock()
	v.jobs = slices.DeleteFunc(v.jobs, func(x *rebuild) bool { return x.slot == slot })
	v.jobs = append(v.jobs, j)
	v.pmu.Unlock()
	v.refreshRouting()
	if err := v.saveRebuild(j, m); err != nil {
		return err
	}
	v.signalWork()
	return nil
}

// failover takes a hot spare for the member in slot, if one is waiting,
// and starts rebuilding onto it.
func (v *Volume) failover(slot int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return
	}
	if err := v.failoverLocked(slot); err != nil {
		v.log.Error("failover failed", "slot", slot, "err", err)
	}
}

// failoverLocked is failover with v.mu held exclusively (or while opening).
func (v *Volume) failoverLocked(slot int) error {
	v.pmu.Lock()
	st := v.policy.State(slot)
	var sp *spareDisk
	if len(v.spares) > 0 {
		sp = v.spares[0]
	}
	v.pmu.Unlock()
	if st != Faulted && st != Removed {
		return nil // dealt with already
	}
	if sp == nil {
		return v.record(Event{Time: v.now(), Slot: slot, Kind: "failover", Reason: "no hot spare is waiting: add one with lockstep spare add, or use lockstep replace"}, false)
	}
	err := v.takeOver(slot, sp, false, fmt.Sprintf("hot spare %s takes over from the %s member", sp.dir, st))
	if err != nil {
		// A spare that cannot be used is dropped, so that the next one
		// gets its turn.
		v.pmu.Lock()
		v.spares = slices.DeleteFunc(v.spares, func(s *spareDisk) bool { return s == sp })
		v.pmu.Unlock()
		v.record(Event{Time: v.now(), Slot: -1, Kind: "spare-remove", Reason: fmt.Sprintf("spare %s is unusable: %v", sp.dir, err)}, true)
		return err
	}
	return nil
}

// takeOver puts the member sp (a spare's label) in slot in place of the
// member there, which is never used again, and starts rebuilding onto it.
// With keep the member there, if it is current throughout, stays open as
// the new member's source until the rebuild is done; otherwise it is
// closed at once. v.mu is held exclusively (or the volume is being
// opened).
func (v *Volume) takeOver(slot int, sp *spareDisk, keep bool, why string) error {
	nm := newMember(slot, sp.dir, v.opts)
	if err := nm.open(v.geo.memberSize(), sp.label); err != nil {
		return fmt.Errorf("open %s: %w", sp.dir, err)
	}
	nm.label.Spare, nm.label.Slot = false, slot
	nm.restart(0)
	old := v.members[slot]
	if old != nil {
		v.dropSource(old, nil)
		if keep && !old.closed.Load() && old.readable.Load() && old.writable.Load() && old.cursor.Load() == whole {
			old.retired.Store(true)
			nm.source.Store(old)
			why += "; it serves reads, and is copied from, until the rebuild is done"
		} else {
			v.retire(old)
		}
	}
	v.pmu.Lock()
	prev := v.policy.State(slot)
	v.members[slot] = nm
	v.policy.Rebuild(slot)
	v.spares = slices.DeleteFunc(v.spares, func(s *spareDisk) bool { return s.label.MemberUUID == sp.label.MemberUUID })
	v.pmu.Unlock()
	v.refreshRouting()
	err := v.record(Event{Time: v.now(), Slot: slot, Kind: "failover", Old: prev.String(), New: Rebuilding.String(), Reason: why}, true)
	if err != nil {
		return err
	}
	return v.startRebuild(slot, KindRebuild, v.intent.writtenRegions(), rebuildCheckpoint{})
}

// Spares lists the hot spares waiting.
func (v *Volume) Spares() []string {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	var out []string
	for _, s := range v.spares {
		out = append(out, s.dir)
	}
	return out
}

// AddSpare formats dir as a hot spare of the volume. A directory that holds
// a member this array no longer uses (fenced, replaced, stale) is wiped and
// added as new; one that holds anything else is refused. If a slot is
// waiting for a spare, the failover onto this one starts at once.
func (v *Volume) AddSpare(dir string) error {
	sp, err := v.newSpare(dir)
	if err != nil {
		return err
	}
	v.pmu.Lock()
	v.spares = append(v.spares, sp)
	waiting := v.policy.NeedsSpare()
	v.pmu.Unlock()
	if err := v.record(Event{Time: v.now(), Slot: -1, Kind: "spare-add", Reason: "hot spare " + sp.dir}, true); err != nil {
		return err
	}
	if waiting >= 0 {
		go v.failover(waiting)
	}
	return nil
}

// RemoveSpare takes a hot spare out of the array. Its files are left as
// they are.
func (v *Volume) RemoveSpare(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	v.pmu.Lock()
	n := len(v.spares)
	v.spares = slices.DeleteFunc(v.spares, func(s *spareDisk) bool { return s.dir == abs })
	removed := len(v.spares) < n
	v.pmu.Unlock()
	if !removed {
		return fmt.Errorf("%s is not a hot spare of this array (lockstep status lists them)", abs)
	}
	return v.record(Event{Time: v.now(), Slot: -1, Kind: "spare-remove", Reason: "hot spare " + abs + " removed by the operator"}, true)
}

// Replace puts a new member, formatted in dir, in slot and rebuilds onto
// it; the member it replaces is never used again. A member that is online
// goes on serving reads ahead of the rebuild, and is copied from, until the
// rebuild is done or it fails (see source.go); any other is closed at once.
// Replacing a member that is online is refused, with ErrQuorum, if the
// array could not serve without it.
func (v *Volume) Replace(slot int, dir string) error {
	if slot < 0 || slot >= len(v.members) {
		return fmt.Errorf("no member in slot %d (the array has slots 0 to %d)", slot, len(v.members)-1)
	}
	v.pmu.Lock()
	st := v.policy.State(slot)
	quorum := v.geo.Survives(v.policy.serving(slot))
	v.pmu.Unlock()
	if st == Online && !quorum {
		return fmt.Errorf("%w: member %d holds data that no other member can provide", ErrQuorum, slot)
	}
	sp, err := v.newSpare(dir)
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return ErrClosed
	}
	return v.takeOver(slot, sp, st == Online, fmt.Sprintf("replaced by %s on the operator's word", sp.dir))
}

// newSpare formats dir as a spare of the array, wiping a member of this
// array that it may hold and that is not in use.
func (v *Volume) newSpare(dir string) (*spareDisk, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if blockdev.HoldsMember(abs) {
		raw, err := blockdev.ReadLabel(abs)
		if err != nil {
			return nil, fmt.Errorf("%s holds something that is not a readable member (%w): give an empty directory", abs, err)
		}
		l, err := DecodeLabel(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", abs, err)
		}
		if l.ArrayUUID != v.base.ArrayUUID {
			return nil, fmt.Errorf("%w: %s holds a member of array %s (%s): give an empty directory", ErrForeignMember, abs, l.ArrayName, l.ArrayUUID)
		}
		if v.inUse(l.MemberUUID) {
			return nil, fmt.Errorf("%s %w of this array, in use: give another directory", abs, blockdev.ErrAlreadyMember)
		}
		// An old member of this array, fenced or replaced: added back as new.
		if err := errors.Join(os.RemoveAll(filepath.Join(abs, blockdev.MetaDir)), os.Remove(filepath.Join(abs, blockdev.DataFile))); err != nil {
			return nil, fmt.Errorf("wipe the old member in %s: %w", abs, err)
		}
	}
	if _, err := checkDirs([]string{abs}, true); err != nil {
		return nil, err
	}
	if _, err := fitSize(v.geo.Layout, v.geo.chunk, v.geo.size, []string{abs}); err != nil {
		return nil, err
	}
	l := spareLabel(v.base)
	if err := formatMember(abs, v.geo.memberSize(), l, nil); err != nil {
		return nil, err
	}
	return &spareDisk{dir: abs, label: l}, nil
}

// inUse reports whether the member with this UUID is a current member or a
// spare of the volume.
func (v *Volume) inUse(uuid string) bool {
	v.pmu.Lock()
	defer v.pmu.Unlock()
	for _, m := range v.members {
		if m != nil && m.label.MemberUUID == uuid {
			return true
		}
	}
	for _, s := range v.spares {
		if s.label.MemberUUID == uuid {
			return true
		}
	}
	return false
}

// loadMembership reads the roster and the rebuild checkpoint the members
// hold: slots recorded as fenced stay fenced, a member being rebuilt goes
// on being rebuilt (its cursor set, so that nothing reads ahead of it), and
// the spares the roster lists join those given. It returns the checkpoint
// of each rebuild to resume.
func (v *Volume) loadMembership(a *assembly, states []MemberState) ([]rebuildCheckpoint, error) {
	var none []rebuildCheckpoint
	var first *member
	for _, m := range v.members {
		if m != nil {
			first = m
			break
		}
	}
	r, ok, err := loadRoster(first)
	if err != nil {
		return none, err
	}
	v.roster = r
	a.findSpares(r)
	for _, s := range a.spares {
		v.spares = append(v.spares, &spareDisk{dir: s.dir, label: s.label})
	}
	if !ok || len(r.Slots) != len(v.members) {
		return none, nil
	}
	var resume []rebuildCheckpoint
	for slot, e := range r.Slots {
		m := v.members[slot]
		if m == nil && (e.State == Removed.String() || e.State == Offline.String() || e.State == Rebuilding.String()) {
			// A member that went away and kept its label comes back to
			// be resynced over what it missed.
			for _, s := range a.stale {
				if s.label.Slot != slot || s.label.MemberUUID != e.UUID {
					continue
				}
				back := newMember(slot, s.dir, v.opts)
				if err := back.open(v.geo.memberSize(), s.label); err != nil {
					v.log.Warn("a member that came back cannot be opened; it stays out", "slot", slot, "dir", s.dir, "err", err)
					break
				}
				if err := back.loadCounters(); err != nil {
					back.m.Close()
					return none, err
				}
				back.restart(0)
				v.members[slot], m = back, back
				e.State = "back"
			}
		}
		switch {
		case m != nil && e.State == "back":
			// It starts over, whatever it was doing when it went (a
			// checkpoint is out of date: it has missed writes behind it
			// since): a resync of what it missed, or, if it had never been
			// rebuilt whole, a rebuild.
			states[slot] = Rebuilding
			cp, err := v.savedRebuild(first, slot, m.label.MemberUUID)
			if err != nil {
				return none, err
			}
			kind := KindResync
			if cp.Kind == KindRebuild && !cp.Started.IsZero() {
				kind = KindRebuild
			}
			resume = append(resume, rebuildCheckpoint{Slot: slot, UUID: m.label.MemberUUID, Kind: kind, back: true})
		case m == nil && e.State == Faulted.String():
			states[slot] = Faulted
		case m != nil && e.State == Rebuilding.String() && e.UUID == m.label.MemberUUID:
			states[slot] = Rebuilding
			cp, err := v.savedRebuild(first, slot, m.label.MemberUUID)
			if err != nil {
				return none, err
			}
			m.restart(cp.Cursor)
			resume = append(resume, cp)
		}
	}
	return resume, nil
}

// savedRebuild returns the checkpoint first holds of the rebuild of the
// member uuid in slot, or one from the start of a rebuild if it has none.
func (v *Volume) savedRebuild(first *member, slot int, uuid string) (rebuildCheckpoint, error) {
	cp := rebuildCheckpoint{Slot: slot, UUID: uuid, Kind: KindRebuild}
	raw, found, err := first.m.Meta.Get(rebuildKey(slot))
	if err != nil {
		return cp, fmt.Errorf("rebuild checkpoint: %w", err)
	}
	if found {
		var saved rebuildCheckpoint
		if err := json.Unmarshal(raw, &saved); err != nil {
			return cp, fmt.Errorf("%w: rebuild checkpoint: %v", ErrCorruptLabel, err)
		}
		if saved.UUID == uuid {
			cp = saved
		}
	}
	return cp, nil
}

// resumeRebuild restarts the rebuilds loadMembership found, then fails
// over onto a spare any slot waiting for one, if the policy fails over by
// itself.
func (v *Volume) resumeRebuild(cps []rebuildCheckpoint) error {
	for _, cp := range cps {
		regions := v.intent.writtenRegions()
		if cp.Kind == KindResync {
			var err error
			if regions, err = v.missedRegions(cp.Slot); err != nil {
				return err
			}
		}
		if cp.back {
			// Back from away: a new generation takes it in (its label
			// was left behind), rebuilding.
			why := fmt.Sprintf("member came back: resyncing the %d region(s) written while it was away", len(regions))
			if cp.Kind == KindRebuild {
				why = fmt.Sprintf("member came back before its rebuild was done: rebuilding its %d written region(s) from the start", len(regions))
			}
			err := v.record(Event{Time: v.now(), Slot: cp.Slot, Kind: cp.Kind, Old: Removed.String(), New: Rebuilding.String(), Reason: why}, true)
			if err != nil {
				return err
			}
		}
		if err := v.startRebuild(cp.Slot, cp.Kind, regions, cp); err != nil {
			return err
		}
		v.log.Warn("resuming a "+cp.Kind, "slot", cp.Slot, "from_stripe", cp.Cursor, "done_bytes", cp.Done)
	}
	if !v.policy.Config().AutoFailover {
		return nil
	}
	for {
		v.pmu.Lock()
		slot, spares := v.policy.NeedsSpare(), len(v.spares)
		v.pmu.Unlock()
		if slot < 0 || spares == 0 {
			return nil
		}
		if err := v.failoverLocked(slot); err != nil {
			v.log.Error("failover failed", "slot", slot, "err", err)
		}
	}
}
