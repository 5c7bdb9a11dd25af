package blockdev

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// File is a Device backed by a preallocated regular file.
type File struct {
	f      *os.File
	fd     int
	size   int64
	direct bool
	closed atomic.Bool
}

// bounceSize is the largest piece an unaligned O_DIRECT request is cut into.
const bounceSize = 1 << 20

var bouncePool = sync.Pool{New: func() any { b := AllocAligned(bounceSize); return &b }}

// CreateFile creates path (which must not exist) and preallocates size bytes,
// so that the member cannot later run out of space. With direct, I/O bypasses
// the page cache (O_DIRECT).
func CreateFile(path string, size int64, direct bool) (*File, error) {
	if size <= 0 || size%BlockSize != 0 {
		return nil, fmt.Errorf("create %s: size %d is not a positive multiple of %d", path, size, BlockSize)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create data file: %w", err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
		if !errors.Is(err, unix.EOPNOTSUPP) {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("preallocate %d bytes for %s: %w", size, path, err)
		}
		if err := f.Truncate(size); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("size %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync %s: %w", path, err)
	}
	f.Close()
	return OpenFile(path, direct)
}

// OpenFile opens an existing data file; its size is the device's size.
func OpenFile(path string, direct bool) (*File, error) {
	flags := os.O_RDWR
	if direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, fmt.Errorf("open data file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat data file: %w", err)
	}
	if st.Size()%BlockSize != 0 {
		f.Close()
		return nil, fmt.Errorf("data file %s: size %d is not a multiple of %d", path, st.Size(), BlockSize)
	}
	return &File{f: f, fd: int(f.Fd()), size: st.Size(), direct: direct}, nil
}

// Size returns the device's size in bytes.
func (d *File) Size() int64 { return d.size }

// ReadAt reads len(p) bytes at off.
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	return d.io(p, off, d.f.ReadAt, false)
}

// WriteAt writes p at off.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	return d.io(p, off, d.f.WriteAt, true)
}

func (d *File) io(p []byte, off int64, op func([]byte, int64) (int, error), write bool) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := CheckRange(d.size, len(p), off); err != nil {
		return 0, err
	}
	if !d.direct || IsAligned(p) {
		return op(p, off)
	}
	// O_DIRECT needs aligned memory: bounce through a pooled buffer.
	bp := bouncePool.Get().(*[]byte)
	defer bouncePool.Put(bp)
	done := 0
	for done < len(p) {
		n := min(len(p)-done, bounceSize)
		b := (*bp)[:n]
		if write {
			copy(b, p[done:done+n])
		}
		m, err := op(b, off+int64(done))
		if !write {
			copy(p[done:done+m], b[:m])
		}
		done += m
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// ReadvAt reads bufs back to back from off with preadv.
func (d *File) ReadvAt(bufs [][]byte, off int64) (int, error) {
	return d.vector(bufs, off, unix.Preadv, d.ReadAt)
}

// WritevAt writes bufs back to back from off with pwritev.
func (d *File) WritevAt(bufs [][]byte, off int64) (int, error) {
	return d.vector(bufs, off, unix.Pwritev, d.WriteAt)
}

func (d *File) vector(bufs [][]byte, off int64, op func(int, [][]byte, int64) (int, error), each func([]byte, int64) (int, error)) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := checkVector(d.size, bufs, off); err != nil {
		return 0, err
	}
	aligned := true
	for _, b := range bufs {
		aligned = aligned && (!d.direct || IsAligned(b))
	}
	done := 0
	if aligned {
		n, err := op(d.fd, bufs, off)
		if err != nil {
			return 0, fmt.Errorf("vectored I/O of %d bytes at %d: %w", totalLen(bufs), off, err)
		}
		done = n
	}
	// A short transfer, or memory O_DIRECT cannot use: finish piece by piece.
	for pos := 0; pos < len(bufs); pos++ {
		b := bufs[pos]
		if done >= len(b) {
			done -= len(b)
			off += int64(len(b))
			continue
		}
		m, err := each(b[done:], off+int64(done))
		if err != nil {
			return 0, err
		}
		off += int64(done + m)
		done = 0
	}
	return totalLen(bufs), nil
}

// Sync makes written data durable (fdatasync).
func (d *File) Sync() error {
	if d.closed.Load() {
		return ErrClosed
	}
	return unix.Fdatasync(d.fd)
}

// Close closes the file. Later calls return ErrClosed.
func (d *File) Close() error {
	if d.closed.Swap(true) {
		return ErrClosed
	}
	return d.f.Close()
}
