package raid

import "errors"

// Sentinel errors. Callers branch on them with errors.Is; the errors returned
// wrap them with the array, member, offset or value concerned.
var (
	// ErrUnrecoverable: the data asked for is damaged beyond the layout's
	// redundancy. The read or write fails instead of guessing.
	ErrUnrecoverable = errors.New("data damaged beyond the layout's redundancy")
	// ErrOutOfRange: an I/O reaches beyond the end of the volume.
	ErrOutOfRange = errors.New("I/O beyond the end of the volume")
	// ErrClosed: the volume is closed.
	ErrClosed = errors.New("volume is closed")
	// ErrBadLayout: a layout name that does not parse, or a member count
	// the layout cannot use.
	ErrBadLayout = errors.New("invalid layout")
	// ErrTooFewMembers: fewer members than the layout needs, at creation or
	// at assembly (beyond what the redundancy can stand in for).
	ErrTooFewMembers = errors.New("too few members")
	// ErrBadChunk: a chunk size that is not a power of two of at least 4 KiB.
	ErrBadChunk = errors.New("invalid chunk size")
	// ErrBadSize: a volume size that is not a positive multiple of 4 KiB or
	// does not fit on the members' file systems.
	ErrBadSize = errors.New("invalid volume size")
	// ErrDuplicateMember: the same directory (or the same member) twice.
	ErrDuplicateMember = errors.New("same member given twice")
	// ErrForeignMember: members of different arrays, or of the same array
	// with different layouts.
	ErrForeignMember = errors.New("members do not belong together")
	// ErrCorruptLabel: a member's label cannot be decoded or fails validation.
	ErrCorruptLabel = errors.New("corrupt member label")
)

var (
	// ErrSuspended: the volume is below quorum and refuses I/O until enough
	// members are back. Nothing that was flushed is lost.
	ErrSuspended = errors.New("volume suspended below quorum")
	// ErrQuorum: a request (such as failing a member) would leave too few
	// members to serve the data.
	ErrQuorum = errors.New("would leave too few members to serve the data")
)

// ErrBadConsistency: an unknown crash-consistency policy.
var ErrBadConsistency = errors.New("invalid consistency policy")
