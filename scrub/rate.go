package scrub

import (
	"errors"
	"fmt"
	"strings"

	"github.com/lockstepfs/lockstep/raid"
)

// Rate bounds background work, in volume bytes per second: it runs at Max
// while users are idle and at Min while they are busy. Max 0 is unlimited;
// Min 0 lets busy users stop the work altogether.
type Rate struct {
	Min, Max int64
}

// DefaultRate keeps a rebuild going at 4 MiB/s while users are busy (md's
// minimum is 1 MB/s), which keeps their read latency within twice its idle
// figure, and lets it go as fast as the disks allow while they are idle.
var DefaultRate = Rate{Min: 4 << 20, Max: 0}

// ErrBadRate says a rate is malformed.
var ErrBadRate = errors.New("bad rate")

// ParseRate reads MIN:MAX, each a size per second such as 32MiB (MAX 0:
// unlimited).
func ParseRate(s string) (Rate, error) {
	lo, hi, ok := strings.Cut(s, ":")
	if !ok {
		return Rate{}, fmt.Errorf("%w: %q: use MIN:MAX, such as 32MiB:0 (MAX 0 is unlimited)", ErrBadRate, s)
	}
	min, err := raid.ParseSize(lo)
	if err != nil {
		return Rate{}, fmt.Errorf("%w: minimum %q: %v", ErrBadRate, lo, err)
	}
	max, err := raid.ParseSize(hi)
	if err != nil {
		return Rate{}, fmt.Errorf("%w: maximum %q: %v", ErrBadRate, hi, err)
	}
	if max != 0 && max < min {
		return Rate{}, fmt.Errorf("%w: maximum %s/s is below minimum %s/s", ErrBadRate, raid.FormatSize(max), raid.FormatSize(min))
	}
	return Rate{Min: min, Max: max}, nil
}

func (r Rate) String() string {
	max := "unlimited"
	if r.Max > 0 {
		max = raid.FormatSize(r.Max) + "/s"
	}
	return fmt.Sprintf("%s/s to %s", raid.FormatSize(r.Min), max)
}
