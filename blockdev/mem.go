package blockdev

import "sync/atomic"

// Mem is a Device in memory. Its contents are durable for as long as the
// value lives; Sync does nothing. Tests use it where disks would only slow
// them down.
type Mem struct {
	data   []byte
	closed atomic.Bool
}

// NewMem returns a zeroed in-memory device of size bytes (a multiple of
// BlockSize).
func NewMem(size int64) *Mem { return &Mem{data: make([]byte, size)} }

// Size returns the device's size in bytes.
func (m *Mem) Size() int64 { return int64(len(m.data)) }

// ReadAt reads len(p) bytes at off.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	if m.closed.Load() {
		return 0, ErrClosed
	}
	if err := CheckRange(m.Size(), len(p), off); err != nil {
		return 0, err
	}
	return copy(p, m.data[off:]), nil
}

// WriteAt writes p at off.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) {
	if m.closed.Load() {
		return 0, ErrClosed
	}
	if err := CheckRange(m.Size(), len(p), off); err != nil {
		return 0, err
	}
	return copy(m.data[off:], p), nil
}

// Sync does nothing but check that the device is open.
func (m *Mem) Sync() error {
	if m.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Close marks the device closed.
func (m *Mem) Close() error {
	if m.closed.Swap(true) {
		return ErrClosed
	}
	return nil
}
