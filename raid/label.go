package raid

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/bits"
	"regexp"

	"github.com/lockstepfs/lockstep/blockdev"
)

const (
	labelMagic   = "lockstep-member"
	labelVersion = 1
)

// Label identifies a member: which array it belongs to, where in it, and how
// current it is. Every member stores its own.
type Label struct {
	Magic      string `json:"magic"`
	Version    int    `json:"version"`
	ArrayUUID  string `json:"array_uuid"`
	ArrayName  string `json:"array_name"`
	MemberUUID string `json:"member_uuid"`
	Slot       int    `json:"slot"`
	Layout     string `json:"layout"`
	Members    int    `json:"members"`
	Chunk      int64  `json:"chunk"`
	Size       int64  `json:"size"`
	// Generation is bumped on every change of membership or member state;
	// at assembly the highest generation is the truth.
	Generation uint64 `json:"generation"`
	// Spare marks a hot spare: formatted for the array, holding no slot
	// (Slot is 0) until a failover takes it.
	Spare bool `json:"spare,omitempty"`
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// newUUID returns a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Encode returns the label's stored form.
func (l Label) Encode() []byte {
	b, _ := json.Marshal(l)
	return b
}

// DecodeLabel parses and validates a stored label. Any problem is an error
// wrapping ErrCorruptLabel.
func DecodeLabel(b []byte) (Label, error) {
	var l Label
	if err := json.Unmarshal(b, &l); err != nil {
		return Label{}, fmt.Errorf("%w: %v", ErrCorruptLabel, err)
	}
	if err := l.validate(); err != nil {
		return Label{}, fmt.Errorf("%w: %v", ErrCorruptLabel, err)
	}
	return l, nil
}

func (l Label) validate() error {
	switch {
	case l.Magic != labelMagic:
		return fmt.Errorf("magic %q is not %q", l.Magic, labelMagic)
	case l.Version != labelVersion:
		return fmt.Errorf("version %d is not supported (this build reads version %d)", l.Version, labelVersion)
	case !uuidRE.MatchString(l.ArrayUUID) || !uuidRE.MatchString(l.MemberUUID):
		return fmt.Errorf("malformed array or member UUID")
	case l.Slot < 0 || l.Slot >= l.Members:
		return fmt.Errorf("slot %d outside 0..%d", l.Slot, l.Members-1)
	}
	if err := checkChunk(l.Chunk); err != nil {
		return err
	}
	if l.Size <= 0 || l.Size%blockdev.BlockSize != 0 {
		return fmt.Errorf("size %d is not a positive multiple of %d", l.Size, blockdev.BlockSize)
	}
	if _, err := ParseLayout(l.Layout, l.Members); err != nil {
		return err
	}
	return nil
}

// Chunk sizes lockstep accepts.
const (
	MinChunk     = blockdev.BlockSize
	MaxChunk     = 16 << 20
	DefaultChunk = 64 << 10
)

func checkChunk(c int64) error {
	if c < MinChunk || c > MaxChunk || bits.OnesCount64(uint64(c)) != 1 {
		return fmt.Errorf("%w: %d bytes: use a power of two from 4KiB to 16MiB", ErrBadChunk, c)
	}
	return nil
}
