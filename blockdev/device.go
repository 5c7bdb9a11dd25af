package blockdev

import (
	"fmt"
	"unsafe"
)

// BlockSize is the unit of every member I/O and of every checksum.
const BlockSize = 4096

// Device is one member disk's data as the engine sees it.
//
// Contract:
//   - Offsets and lengths are multiples of BlockSize, and off+len(p) is at
//     most Size(); otherwise ReadAt and WriteAt fail with ErrUnaligned or
//     ErrOutOfRange and do nothing.
//   - ReadAt fills the whole of p or returns an error. A *ChecksumError means
//     p was filled but the listed blocks are not what was written.
//   - WriteAt writes the whole of p or returns an error; after an error the
//     range holds old data, new data or a mix, block by block.
//   - ReadAt and WriteAt may be called concurrently on disjoint ranges. The
//     caller serialises overlapping requests.
//   - Data written is durable once Sync returns nil; before that a crash may
//     lose it.
//   - After Close every call returns ErrClosed.
type Device interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Sync() error
	Size() int64
	Close() error
}

// CheckRange returns an error wrapping ErrUnaligned or ErrOutOfRange when an
// n-byte I/O at off does not fit the Device contract for a device of the
// given size. Implementations call it first.
func CheckRange(size int64, n int, off int64) error {
	if off%BlockSize != 0 || n%BlockSize != 0 {
		return fmt.Errorf("%w: %d bytes at %d", ErrUnaligned, n, off)
	}
	if off < 0 || off+int64(n) > size {
		return fmt.Errorf("%w: %d bytes at %d, size %d", ErrOutOfRange, n, off, size)
	}
	return nil
}

// AllocAligned returns a zeroed n-byte slice whose first byte is aligned to
// BlockSize, as O_DIRECT requires.
func AllocAligned(n int) []byte {
	b := make([]byte, n+BlockSize)
	shift := 0
	if r := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % BlockSize); r != 0 {
		shift = BlockSize - r
	}
	return b[shift : shift+n : shift+n]
}

// IsAligned reports whether p starts on a BlockSize boundary.
func IsAligned(p []byte) bool {
	return len(p) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(p)))%BlockSize == 0
}
