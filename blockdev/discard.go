package blockdev

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Discarder is a Device that can forget a block-aligned range, which then
// reads as zeros.
type Discarder interface {
	Discard(off, n int64) error
}

// zeroPiece is the largest write Discard issues to zero a device that cannot
// forget.
const zeroPiece = 1 << 20

// Discard makes the n bytes at off (block-aligned) read as zeros: d forgets
// them if it is a Discarder, and has zeros written over them otherwise.
func Discard(d Device, off, n int64) error {
	if dd, ok := d.(Discarder); ok {
		return dd.Discard(off, n)
	}
	return writeZeros(d, off, n)
}

func writeZeros(d Device, off, n int64) error {
	if err := checkDiscard(d.Size(), off, n); err != nil {
		return err
	}
	zeros := AllocAligned(int(min(n, zeroPiece)))
	for done := int64(0); done < n; {
		m := min(n-done, int64(len(zeros)))
		if _, err := d.WriteAt(zeros[:m], off+done); err != nil {
			return fmt.Errorf("zero %d bytes at %d: %w", m, off+done, err)
		}
		done += m
	}
	return nil
}

func checkDiscard(size, off, n int64) error {
	if off%BlockSize != 0 || n%BlockSize != 0 {
		return fmt.Errorf("%w: discard of %d bytes at %d", ErrUnaligned, n, off)
	}
	if off < 0 || n < 0 || off+n > size {
		return fmt.Errorf("%w: discard of %d bytes at %d, size %d", ErrOutOfRange, n, off, size)
	}
	return nil
}

// Discard punches a hole in the file (keeping its size), so that the range
// reads as zeros and its space returns to the file system. File systems
// that cannot punch holes get zeros written instead.
func (d *File) Discard(off, n int64) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if err := checkDiscard(d.size, off, n); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	err := unix.Fallocate(d.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return writeZeros(d, off, n)
	}
	if err != nil {
		return fmt.Errorf("punch %d bytes at %d: %w", n, off, err)
	}
	return nil
}

// Discard zeroes the range.
func (m *Mem) Discard(off, n int64) error {
	if m.closed.Load() {
		return ErrClosed
	}
	if err := checkDiscard(m.Size(), off, n); err != nil {
		return err
	}
	clear(m.data[off : off+n])
	return nil
}

// Discard goes through the write rules: an error, full or vanish rule
// covering the range fails it before anything is forgotten.
func (f *Faulty) Discard(off, n int64) error {
	if err := f.before(OpWrite, "discard", int(n), off); err != nil {
		return err
	}
	return Discard(f.dev, off, n)
}

// Discard records the range as holding zeros, then has the device forget
// it. As with writes, the checksums are recorded first, so that if the
// discard fails the old data is caught as a mismatch rather than served.
func (c *Checked) Discard(off, n int64) error {
	if err := checkDiscard(c.dev.Size(), off, n); err != nil {
		return err
	}
	if err := c.sums.Zero(off/BlockSize, n/BlockSize); err != nil {
		return fmt.Errorf("record zero checksums for %d bytes at %d: %w", n, off, err)
	}
	return Discard(c.dev, off, n)
}
