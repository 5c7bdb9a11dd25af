package raid

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

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
	// layer; tests use it to inject faults.
	Wrap func(slot int, dev blockdev.Device) blockdev.Device
}

// member is one open member of a volume.
type member struct {
	slot  int
	label Label
	m     *blockdev.Member
	dev   blockdev.Device // checksummed, over the (wrapped) data file

	readErrors, writeErrors, checksumErrors atomic.Int64
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
	bufs    sync.Pool // chunk-sized, block-aligned buffers
	log     *slog.Logger

	mu     sync.RWMutex // I/O holds it shared, Close exclusively
	closed bool
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
	ms, err := readLabels(dirs)
	if err != nil {
		return nil, err
	}
	a, err := assemble(ms)
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
	v := &Volume{
		geo:     newGeometry(a.layout, a.base.Chunk, a.base.Size),
		base:    a.base,
		members: make([]*member, a.layout.Members),
		log:     log,
	}
	chunk := int(v.geo.chunk)
	v.bufs.New = func() any { b := blockdev.AllocAligned(chunk); return &b }
	if a.layout.Parity > 0 {
		v.codec, err = newCodec(a.layout.Data, a.layout.Parity)
		if err != nil {
			return nil, fmt.Errorf("reed-solomon %d+%d: %w", a.layout.Data, a.layout.Parity, err)
		}
	}
	for slot, f := range a.current {
		if f == nil {
			continue
		}
		bm, err := blockdev.OpenMember(f.dir, o.Direct)
		if err == nil && bm.Data.Size() < v.geo.memberSize() {
			bm.Close()
			err = fmt.Errorf("%w: data file holds %d bytes, the layout needs %d", ErrCorruptLabel, bm.Data.Size(), v.geo.memberSize())
		}
		if err != nil {
			v.closeMembers()
			return nil, fmt.Errorf("open member %d in %s: %w", slot, f.dir, err)
		}
		dev := bm.Data
		if o.Wrap != nil {
			dev = o.Wrap(slot, dev)
		}
		v.members[slot] = &member{slot: slot, label: f.label, m: bm, dev: blockdev.NewChecked(dev, bm.Sums)}
	}
	return v, nil
}

// newCodec returns the Reed-Solomon codec of a k+m stripe. Its parity bytes
// are part of the on-disk format: TestParityIsPinned guards them. It runs
// one goroutine per call, since the engine parallelises across stripes,
// which beats splitting a chunk of 64 KiB or less between goroutines.
func newCodec(k, m int, opts ...reedsolomon.Option) (reedsolomon.Encoder, error) {
	return reedsolomon.New(k, m, append([]reedsolomon.Option{reedsolomon.WithMaxGoroutines(1)}, opts...)...)
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

// present reports, by slot, which members are open.
func (v *Volume) present() []bool {
	p := make([]bool, len(v.members))
	for i, m := range v.members {
		p[i] = m != nil
	}
	return p
}

// ReadAt reads len(p) bytes at volume offset off. Blocks that fail their
// checksum or whose member fails are served from redundancy. A read that
// reaches the end of the volume returns what lies before it and io.EOF. If
// the data cannot be proven good the read fails with an error wrapping
// ErrUnrecoverable; it never returns wrong data.
func (v *Volume) ReadAt(p []byte, off int64) (int, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return 0, ErrClosed
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
	if v.closed {
		return 0, ErrClosed
	}
	if off < 0 || off+int64(len(p)) > v.geo.size {
		return 0, fmt.Errorf("%w: %d bytes at %d, volume size %d", ErrOutOfRange, len(p), off, v.geo.size)
	}
	if err := v.forStripes(p, off, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush makes every write that returned before it durable on the members,
// with their checksums. It fails if the members that synced are too few to
// serve the data.
func (v *Volume) Flush() error {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.closed {
		return ErrClosed
	}
	return v.flush()
}

func (v *Volume) flush() error {
	errs := make([]error, len(v.members))
	var wg sync.WaitGroup
	for i, m := range v.members {
		if m != nil {
			wg.Go(func() { errs[i] = m.dev.Sync() })
		}
	}
	wg.Wait()
	ok := v.present()
	for i, err := range errs {
		if err != nil {
			ok[i] = false
			v.members[i].writeErrors.Add(1)
			v.log.Warn("member failed to sync", "slot", i, "err", err)
		}
	}
	if !v.geo.Survives(ok) {
		return fmt.Errorf("%w: flush reached too few members: %w", ErrUnrecoverable, errors.Join(errs...))
	}
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
	return errors.Join(v.flush(), v.closeMembers())
}

func (v *Volume) closeMembers() error {
	var errs []error
	for _, m := range v.members {
		if m != nil {
			errs = append(errs, m.m.Close())
		}
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
