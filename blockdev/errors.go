package blockdev

import (
	"errors"
	"fmt"
)

var (
	// ErrUnaligned is returned when an offset or a length is not a multiple
	// of BlockSize.
	ErrUnaligned = errors.New("blockdev: offset or length not aligned to the block size")
	// ErrOutOfRange is returned for I/O that reaches beyond the device's size.
	ErrOutOfRange = errors.New("blockdev: I/O beyond the end of the device")
	// ErrClosed is returned by every call on a closed device.
	ErrClosed = errors.New("blockdev: device is closed")
	// ErrChecksum is wrapped by [*ChecksumError]: the data read does not
	// match the checksum recorded when it was written.
	ErrChecksum = errors.New("blockdev: checksum mismatch")
	// ErrInjected is wrapped by every fault that [Faulty] injects, so tests
	// can tell injected failures from real ones.
	ErrInjected = errors.New("blockdev: injected fault")
	// ErrVanished is returned by every I/O to a device that has vanished
	// under an injected fault (vanish, torn); it wraps ErrInjected.
	ErrVanished = fmt.Errorf("blockdev: device vanished: %w", ErrInjected)
	// ErrNotMember is returned by OpenMember for a directory that holds no
	// member.
	ErrNotMember = errors.New("not a lockstep member")
	// ErrAlreadyMember is returned by CreateMember for a directory that
	// already holds a member.
	ErrAlreadyMember = errors.New("already holds a lockstep member")
	// ErrInUse is returned when another opener (a running mount) holds a
	// member's metadata.
	ErrInUse = errors.New("member is in use by a running lockstep (ask it: lockstep status MOUNTPOINT)")
	// ErrNoLabel is returned by Meta.Label when the member has no label.
	ErrNoLabel = errors.New("member has no label")
)

// ChecksumError reports the blocks of one read whose contents did not match
// their recorded CRC-32C. The read still filled the whole buffer; only the
// listed blocks are suspect.
type ChecksumError struct {
	Off    int64   // device offset of the read
	Blocks []int64 // indexes of the bad blocks, relative to Off, ascending
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("blockdev: checksum mismatch in %d block(s) of the read at %d (first at +%d)",
		len(e.Blocks), e.Off, e.Blocks[0]*BlockSize)
}

// Unwrap lets errors.Is(err, ErrChecksum) match.
func (e *ChecksumError) Unwrap() error { return ErrChecksum }
