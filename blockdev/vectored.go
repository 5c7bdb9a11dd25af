package blockdev

import (
	"errors"
	"fmt"
)

// Vectored is implemented by Devices that can move several buffers, laid
// back to back on the device from off, in one call. ReadvAt and WritevAt
// behave as ReadAt and WriteAt of the buffers' concatenation (every buffer a
// multiple of BlockSize); a *ChecksumError counts blocks from off across all
// the buffers.
type Vectored interface {
	ReadvAt(bufs [][]byte, off int64) (int, error)
	WritevAt(bufs [][]byte, off int64) (int, error)
}

// ReadvAt reads bufs back to back from off, in one call if d is Vectored.
func ReadvAt(d Device, bufs [][]byte, off int64) (int, error) {
	if v, ok := d.(Vectored); ok {
		return v.ReadvAt(bufs, off)
	}
	n := 0
	var bad []int64
	for _, b := range bufs {
		m, err := d.ReadAt(b, off+int64(n))
		var ce *ChecksumError
		if errors.As(err, &ce) {
			for _, blk := range ce.Blocks {
				bad = append(bad, int64(n)/BlockSize+blk)
			}
		} else if err != nil {
			return n, err
		}
		n += m
	}
	if bad != nil {
		return n, &ChecksumError{Off: off, Blocks: bad}
	}
	return n, nil
}

// WritevAt writes bufs back to back from off, in one call if d is Vectored.
func WritevAt(d Device, bufs [][]byte, off int64) (int, error) {
	if v, ok := d.(Vectored); ok {
		return v.WritevAt(bufs, off)
	}
	n := 0
	for _, b := range bufs {
		m, err := d.WriteAt(b, off+int64(n))
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// totalLen is the bytes in bufs.
func totalLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// checkVector checks a vectored I/O against the Device contract.
func checkVector(size int64, bufs [][]byte, off int64) error {
	for _, b := range bufs {
		if len(b)%BlockSize != 0 {
			return fmt.Errorf("%w: a buffer of %d bytes in a vectored I/O", ErrUnaligned, len(b))
		}
	}
	return CheckRange(size, totalLen(bufs), off)
}
