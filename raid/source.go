package raid

import (
	"errors"
	"fmt"

	"github.com/lockstepfs/lockstep/blockdev"
)

// A member an operator replaces while it is healthy stays open as the new
// member's source until the new member is rebuilt, as md's replacement
// does: ahead of the rebuild's cursor it serves the slot's reads (so the
// array does not read degraded) and the rebuild copies from it (one read a
// chunk instead of Data), and it takes the slot's writes there, so that it
// stays current. It counts for nothing else (quorum, flush): at the first
// error it is dropped, and a crash forgets it (the roster has it replaced),
// leaving the rebuild to reconstruct from the others as it would have.

// errSourceGone says a source was closed while an I/O was on its way.
var errSourceGone = errors.New("the replaced member is closed")

// onSource runs fn on the source of m, if m has one that is still open,
// and drops the source if fn fails. It reports whether fn ran and
// succeeded.
func (v *Volume) onSource(m *member, fn func(src *member) error) bool {
	src := m.source.Load()
	if src == nil {
		return false
	}
	src.mu.RLock()
	err := errSourceGone
	if !src.closed.Load() {
		err = fn(src)
	}
	src.mu.RUnlock()
	if err != nil {
		v.dropSource(m, err)
		return false
	}
	return true
}

// sourceWrite passes a group of writes to m (already made) on to its
// source, where they lie ahead of m's cursor: elsewhere it is never read
// again. Writes of the rebuild itself are m's alone.
func (v *Volume) sourceWrite(m *member, g []*memIO, bufs [][]byte) {
	last := g[len(g)-1]
	if g[0].own || m.source.Load() == nil || (last.off+int64(len(last.buf))+last.forget-1)/v.geo.chunk < m.cursor.Load() {
		return
	}
	v.onSource(m, func(src *member) error {
		if g[0].buf == nil {
			return blockdev.Discard(src.dev, g[0].off, g[0].forget)
		}
		_, err := blockdev.WritevAt(src.dev, bufs, g[0].off)
		return err
	})
}

// dropSource closes m's source, if it still has one, for good; cause, if
// not nil, is why (logged).
func (v *Volume) dropSource(m *member, cause error) {
	src := m.source.Load()
	if src == nil || !m.source.CompareAndSwap(src, nil) {
		return
	}
	if cause != nil {
		v.log.Warn("the replaced member failed: reads ahead of the rebuild are reconstructed from the others", "slot", m.slot, "dir", src.dir, "err", cause)
	}
	v.retire(src)
}

// retire closes a member that is out of the array for good.
func (v *Volume) retire(old *member) {
	old.retired.Store(true)
	old.mu.Lock()
	defer old.mu.Unlock()
	if old.closed.Load() {
		return
	}
	if err := errors.Join(old.saveCounters(), old.m.Close()); err != nil {
		v.log.Warn("closing the replaced member", "slot", old.slot, "dir", old.dir, "err", err)
	}
	old.closed.Store(true)
}

// copyFromSource reads the chunks of m's slot in stripes [s0, s1) from its
// source into bufs, in one call. It reports whether it could.
func (v *Volume) copyFromSource(m *member, s0 int64, bufs [][]byte) bool {
	return v.onSource(m, func(src *member) error {
		if _, err := blockdev.ReadvAt(src.dev, bufs, s0*v.geo.chunk); err != nil {
			return fmt.Errorf("copy stripes from %d: %w", s0, err)
		}
		return nil
	})
}
