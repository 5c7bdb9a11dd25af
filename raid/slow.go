package raid

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
)

// latencies keeps a member's most recent read latencies.
type latencies struct {
	mu      sync.Mutex
	samples [64]time.Duration
	n       int
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.samples[l.n%len(l.samples)] = d
	l.n++
	l.mu.Unlock()
}

// median returns the median of the recent samples, or 0 with fewer than 8.
func (l *latencies) median() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := min(l.n, len(l.samples))
	if k < 8 {
		return 0
	}
	s := slices.Clone(l.samples[:k])
	slices.Sort(s)
	return s[k/2]
}

// slowness is what the volume keeps about a member's speed.
type slowness struct {
	lat      latencies
	lastSlow atomic.Int64 // unix nanoseconds of its last slow read; 0 if none
	bound    atomic.Int64 // the cached slow bound, in nanoseconds
	boundAt  atomic.Int64 // unix nanoseconds when it was computed
}

// boundTTL is how long a member's computed slow bound is reused.
const boundTTL = 100 * time.Millisecond

// slowBound returns the latency past which a read of the member in slot is
// slow: SlowFactor times the median of its peers' median latencies, and at
// least SlowFloor. It is recomputed at most every boundTTL.
func (v *Volume) slowBound(slot int) time.Duration {
	m := v.members[slot]
	now := time.Now().UnixNano()
	if at := m.slow.boundAt.Load(); at != 0 && now-at < int64(boundTTL) {
		return time.Duration(m.slow.bound.Load())
	}
	b := v.computeBound(slot)
	m.slow.bound.Store(int64(b))
	m.slow.boundAt.Store(now)
	return b
}

func (v *Volume) computeBound(slot int) time.Duration {
	cfg := v.policy.cfg // immutable after Open
	var peers []time.Duration
	for i, m := range v.members {
		if i != slot && m != nil && v.usable(i, false) {
			if d := m.slow.lat.median(); d > 0 {
				peers = append(peers, d)
			}
		}
	}
	bound := cfg.SlowFloor
	if len(peers) > 0 {
		slices.Sort(peers)
		bound = max(bound, time.Duration(cfg.SlowFactor*float64(peers[len(peers)/2])))
	}
	return bound
}

// suspect reports whether a member's reads should be hedged: it was slow
// lately, and the other members that take reads and were not slow lately
// themselves can serve the data without it. Otherwise there is nothing
// reliable to hedge to (when the whole disk stalls, every member is slow at
// once, and hedging them all would leave a read with no answer at all), and
// its reads wait for it.
func (v *Volume) suspect(m *member) bool {
	if !v.slowLately(m) {
		return false
	}
	others := make([]bool, len(v.members))
	for i, o := range v.members {
		others[i] = i != m.slot && v.usable(i, false) && !v.slowLately(o)
	}
	return v.geo.Survives(others)
}

// slowLately reports whether a member had a slow read within the sit-out
// period.
func (v *Volume) slowLately(m *member) bool {
	last := m.slow.lastSlow.Load()
	return last != 0 && time.Since(time.Unix(0, last)) < v.policy.cfg.SitOut
}

// noteSlow counts a slow read against a member and tells the policy.
func (v *Volume) noteSlow(m *member) {
	m.slow.lastSlow.Store(time.Now().UnixNano())
	m.ctr.slow.Add(1)
	slot := m.slot
	v.report(slot, func(p *Policy, now time.Time) []Action { return p.SlowIO(slot, now) })
}

// timedRead reads bufs from a member, timing the read, and says whether it
// took past the slow bound; the caller, once it has let go of m.mu, counts
// it with noteSlow.
func (v *Volume) timedRead(m *member, bufs [][]byte, off int64) (slow bool, err error) {
	bound := v.slowBound(m.slot)
	start := time.Now()
	_, err = blockdev.ReadvAt(m.dev, bufs, off)
	took := time.Since(start)
	m.slow.lat.add(took)
	return took > bound, err
}

// hedgedRead reads bufs from a suspect member into pooled buffers and waits
// at most the slow bound for them. If the member answers in time its data is
// copied over; if not, the read counts as missing, the caller serves it from
// redundancy, and the late answer is thrown away when it comes. m.mu is not
// held: the read takes it itself, and may outlive the call.
func (v *Volume) hedgedRead(m *member, bufs [][]byte, off int64) (answered bool, err error) {
	bound := v.slowBound(m.slot)
	private := make([][]byte, len(bufs))
	for i, b := range bufs {
		private[i] = v.getBuf(int64(len(b)))
	}
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		m.mu.RLock()
		var err error = errMissing
		if !m.closed.Load() {
			_, err = blockdev.ReadvAt(m.dev, private, off)
		}
		m.mu.RUnlock()
		done <- err
	}()
	timer := time.NewTimer(bound)
	defer timer.Stop()
	select {
	case err := <-done:
		m.slow.lat.add(time.Since(start))
		for i, b := range bufs {
			copy(b, private[i])
		}
		v.putBuf(private...)
		return true, err
	case <-timer.C:
		v.noteSlow(m)
		go func() {
			<-done
			m.slow.lat.add(time.Since(start))
			v.putBuf(private...)
		}()
		return false, errMissing
	}
}

// lastResort reads again, waiting for them, the I/Os that were skipped
// (errMissing) because their member was kept out of reads — sitting out,
// hedged around for being slow — although it is online. Callers use it when
// the members that were read cannot prove the data: a slow answer beats a
// failed read. Members that are fenced, offline or closed stay skipped.
func (v *Volume) lastResort(ios []memIO) {
	parallel(len(ios), func(i int) {
		io := &ios[i]
		m := v.members[io.slot]
		if io.err != errMissing || !v.holds(io.slot, (io.off+int64(len(io.buf))-1)/v.geo.chunk) {
			return
		}
		m.mu.RLock()
		defer m.mu.RUnlock()
		if m.closed.Load() {
			return
		}
		_, io.err = blockdev.ReadvAt(m.dev, [][]byte{io.buf}, io.off)
	})
}
