package chaos

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/lockstepfs/lockstep/blockdev"
)

const (
	blockSize = blockdev.BlockSize
	unitSize  = 1 << 20 // each worker owns whole units, so the record needs no locks
	magic     = 0x6c6f636b73746570
)

// ErrWrongData says a read returned bytes that were never written there:
// the one thing lockstep must never do.
var ErrWrongData = errors.New("wrong data")

// blockRecord is what the workload knows of one block: the versions a read
// may return now (more than one after a write that failed), and those a
// crash may leave (every version written since the last flush).
type blockRecord struct {
	live  []uint32
	crash []uint32
}

// workload is the built-in workload: workers doing a seeded mix of writes,
// reads and flushes on the volume, each over its own units, checking every
// block read against the record of what was written.
type workload struct {
	spec  WorkloadSpec
	sizes []int
	span  int64

	mu     sync.Mutex // the file, swapped at a remount
	file   *os.File
	gate   sync.RWMutex // ops hold it shared; pause takes it
	blocks []blockRecord
	next   atomic.Uint32 // the last version handed out

	ops      atomic.Int64
	errs     atomic.Int64
	wrong    atomic.Int64
	verified atomic.Int64
	firstErr atomic.Pointer[string]
	crashing atomic.Bool // I/O errors are expected: the daemon is being killed

	progress *sync.Cond // broadcast after every operation
	pmu      sync.Mutex
	stop     chan struct{}
	done     sync.WaitGroup
}

func newWorkload(spec WorkloadSpec, span int64, sizes []int) *workload {
	w := &workload{spec: spec, span: span, sizes: sizes, blocks: make([]blockRecord, span/blockSize), stop: make(chan struct{})}
	for i := range w.blocks {
		w.blocks[i] = blockRecord{live: []uint32{0}, crash: []uint32{0}}
	}
	w.progress = sync.NewCond(&w.pmu)
	return w
}

// start opens the volume and starts the workers.
func (w *workload) start(volume string) error {
	if err := w.open(volume); err != nil {
		return err
	}
	units := int(w.span / unitSize)
	workers := min(max(w.spec.Workers, 1), units)
	for id := range workers {
		w.done.Add(1)
		go w.worker(id, workers)
	}
	return nil
}

// open opens (or, after a remount, reopens) the volume with O_DIRECT, so
// that every request reaches the mount.
func (w *workload) open(volume string) error {
	f, err := os.OpenFile(volume, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return fmt.Errorf("workload: %w", err)
	}
	w.mu.Lock()
	old := w.file
	w.file = f
	w.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (w *workload) fd() *os.File {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.file
}

// close stops the workers and closes the volume.
func (w *workload) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	w.done.Wait()
	w.pmu.Lock()
	w.progress.Broadcast()
	w.pmu.Unlock()
	if f := w.fd(); f != nil {
		f.Close()
	}
}

// pause waits for the operations under way and holds the workers;
// resume lets them go on.
func (w *workload) pause()  { w.gate.Lock() }
func (w *workload) resume() { w.gate.Unlock() }

// waitOps waits until the workers have done n more operations than
// before, or the workload stops.
func (w *workload) waitOps(n int64) {
	target := w.ops.Load() + n
	w.pmu.Lock()
	defer w.pmu.Unlock()
	for w.ops.Load() < target {
		select {
		case <-w.stop:
			return
		default:
		}
		w.progress.Wait()
	}
}

// worker runs operations over the units u with u % workers == id.
func (w *workload) worker(id, workers int) {
	defer w.done.Done()
	rng := rand.New(rand.NewPCG(w.spec.Seed, uint64(id)+1))
	units := int(w.span / unitSize)
	mine := (units - id + workers - 1) / workers
	buf := blockdev.AllocAligned(unitSize)
	total := w.spec.Write + w.spec.Read + w.spec.Flush
	for {
		select {
		case <-w.stop:
			return
		default:
		}
		w.gate.RLock()
		unit := int64(id + workers*rng.IntN(mine))
		size := w.sizes[rng.IntN(len(w.sizes))]
		off := unit*unitSize + int64(rng.IntN((unitSize-size)/blockSize+1))*blockSize
		switch pick := rng.IntN(total); {
		case pick < w.spec.Write:
			w.write(buf[:size], off)
		case pick < w.spec.Write+w.spec.Read:
			w.read(buf[:size], off)
		default:
			w.flush(id, workers)
		}
		w.gate.RUnlock()
		w.ops.Add(1)
		w.pmu.Lock()
		w.progress.Broadcast()
		w.pmu.Unlock()
	}
}

// ioError counts an I/O error the workload saw, unless a crash is under
// way.
func (w *workload) ioError(err error) {
	if w.crashing.Load() {
		return
	}
	w.errs.Add(1)
	msg := err.Error()
	w.firstErr.CompareAndSwap(nil, &msg)
}

// fill writes block b's contents at version v into p.
func (w *workload) fill(p []byte, b int64, v uint32) {
	if v == 0 {
		clear(p)
		return
	}
	binary.LittleEndian.PutUint64(p, magic)
	binary.LittleEndian.PutUint64(p[8:], uint64(b))
	binary.LittleEndian.PutUint32(p[16:], v)
	rng := rand.NewPCG(w.spec.Seed^uint64(b), uint64(v))
	for i := 24; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
}

// versionOf returns the version a block read back holds, or an error if
// its bytes are no version of this block.
func (w *workload) versionOf(p []byte, b int64, scratch []byte) (uint32, error) {
	if binary.LittleEndian.Uint64(p) != magic {
		for _, c := range p {
			if c != 0 {
				return 0, fmt.Errorf("block %d (volume offset %d) holds bytes the workload never wrote", b, b*blockSize)
			}
		}
		return 0, nil
	}
	if got := int64(binary.LittleEndian.Uint64(p[8:])); got != b {
		return 0, fmt.Errorf("block %d (volume offset %d) holds block %d's data", b, b*blockSize, got)
	}
	v := binary.LittleEndian.Uint32(p[16:])
	w.fill(scratch, b, v)
	if string(scratch) != string(p) {
		return 0, fmt.Errorf("block %d (volume offset %d) is a corrupt copy of version %d", b, b*blockSize, v)
	}
	return v, nil
}

func (w *workload) write(p []byte, off int64) {
	v := w.next.Add(1)
	first := off / blockSize
	for i := range int64(len(p) / blockSize) {
		w.fill(p[i*blockSize:(i+1)*blockSize], first+i, v)
	}
	_, err := w.fd().WriteAt(p, off)
	if err != nil {
		w.ioError(fmt.Errorf("write %d bytes at %d: %w", len(p), off, err))
	}
	for i := range int64(len(p) / blockSize) {
		r := &w.blocks[first+i]
		if err != nil {
			r.live = append(r.live, v)
		} else {
			r.live = append(r.live[:0], v)
		}
		r.crash = append(r.crash, v)
	}
}

func (w *workload) read(p []byte, off int64) {
	if _, err := w.fd().ReadAt(p, off); err != nil {
		w.ioError(fmt.Errorf("read %d bytes at %d: %w", len(p), off, err))
		return
	}
	w.check(p, off, false)
}

// check compares blocks read at off with the record: with the versions a
// read may return, or after a crash with those a crash may leave.
func (w *workload) check(p []byte, off int64, afterCrash bool) {
	first := off / blockSize
	scratch := make([]byte, blockSize)
	for i := range int64(len(p) / blockSize) {
		b := first + i
		r := &w.blocks[b]
		v, err := w.versionOf(p[i*blockSize:(i+1)*blockSize], b, scratch)
		allowed := r.live
		if afterCrash {
			allowed = r.crash
		}
		if err == nil && !slices.Contains(allowed, v) {
			err = fmt.Errorf("block %d (volume offset %d) holds version %d, which is not one it may hold (%v)", b, b*blockSize, v, allowed)
		}
		if err != nil {
			w.wrong.Add(1)
			msg := fmt.Sprintf("%v: %v", ErrWrongData, err)
			w.firstErr.CompareAndSwap(nil, &msg)
			continue
		}
		if afterCrash {
			// Recovery leaves every copy alike: what was found is what
			// the block holds. (After a failed write, copies may differ
			// until the next write, so ordinary reads narrow nothing.)
			r.live = append(r.live[:0], v)
			r.crash = append(r.crash[:0], v)
		}
	}
}

// flush syncs the volume; once it succeeds, what each of this worker's
// blocks holds now is what a crash leaves.
func (w *workload) flush(id, workers int) {
	if err := w.fd().Sync(); err != nil {
		w.ioError(fmt.Errorf("flush: %w", err))
		return
	}
	for u := int64(id); u < w.span/unitSize; u += int64(workers) {
		for b := u * unitSize / blockSize; b < (u+1)*unitSize/blockSize; b++ {
			r := &w.blocks[b]
			if len(r.live) == 1 && len(r.crash) > 1 {
				r.crash = append(r.crash[:0], r.live[0])
			}
		}
	}
}

// verify reads the whole span back, with the workers paused, and checks
// every block; afterCrash checks against what a crash may leave. Reads
// that fail are retried block by block, so that errors are counted
// exactly.
func (w *workload) verify(afterCrash bool) {
	buf := blockdev.AllocAligned(unitSize)
	f := w.fd()
	for off := int64(0); off < w.span; off += unitSize {
		if _, err := f.ReadAt(buf, off); err == nil {
			w.check(buf, off, afterCrash)
			w.verified.Add(unitSize)
			continue
		}
		for b := off; b < off+unitSize; b += blockSize {
			p := buf[:blockSize]
			if _, err := f.ReadAt(p, b); err != nil {
				w.ioError(fmt.Errorf("verify: read at %d: %w", b, err))
				continue
			}
			w.check(p, b, afterCrash)
			w.verified.Add(blockSize)
		}
	}
}
