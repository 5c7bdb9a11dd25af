package control

import (
	"fmt"
	"strings"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
)

// FaultSpec is a fault as people write it, on lockstep inject's command
// line and in chaos scenarios.
type FaultSpec struct {
	// Fault is the kind: error, flip, rogue, delay, stall, rot, torn,
	// vanish or full.
	Fault string `yaml:"fault"`
	// Ops is read, write or both (the default for the kinds that apply to
	// both).
	Ops string `yaml:"ops"`
	// Rate is the probability that a matching I/O is hit; 0 means every
	// one.
	Rate float64 `yaml:"rate"`
	// Range is OFF:LEN of the member's data (sizes such as 16MiB:1MiB),
	// block-aligned; empty means the whole disk.
	Range string `yaml:"range"`
	// Count is how many I/Os are hit before the fault retires; 0 means no
	// limit.
	Count int `yaml:"count"`
	// For is how long the fault lasts; 0 means until cleared.
	For time.Duration `yaml:"for"`
	// Delay and Jitter are a delay fault's fixed and random parts.
	Delay  time.Duration `yaml:"delay"`
	Jitter time.Duration `yaml:"jitter"`
	// Seed, if not 0, reseeds the disk's fault generator.
	Seed uint64 `yaml:"seed"`
}

// Rule checks the spec and turns it into the rule the fault wrapper runs.
func (s FaultSpec) Rule() (blockdev.Rule, error) {
	if s.Fault == "" {
		return blockdev.Rule{}, fmt.Errorf("no fault kind given: use one of %s", strings.Join(blockdev.FaultKinds(), ", "))
	}
	kind, err := blockdev.ParseFaultKind(s.Fault)
	if err != nil {
		return blockdev.Rule{}, err
	}
	r := blockdev.Rule{Kind: kind, Count: s.Count, Prob: s.Rate, For: s.For, Delay: s.Delay, Jitter: s.Jitter, Seed: s.Seed}
	if s.Ops != "" {
		if r.Ops, err = blockdev.ParseOp(s.Ops); err != nil {
			return blockdev.Rule{}, err
		}
	}
	if s.Range != "" {
		offText, lenText, ok := strings.Cut(s.Range, ":")
		if !ok {
			return blockdev.Rule{}, fmt.Errorf("fault range %q: give OFF:LEN, for example 16MiB:1MiB", s.Range)
		}
		off, err := raid.ParseSize(offText)
		if err != nil {
			return blockdev.Rule{}, fmt.Errorf("fault range offset: %w", err)
		}
		n, err := raid.ParseSize(lenText)
		if err != nil {
			return blockdev.Rule{}, fmt.Errorf("fault range length: %w", err)
		}
		if off%blockdev.BlockSize != 0 || n%blockdev.BlockSize != 0 || n == 0 {
			return blockdev.Rule{}, fmt.Errorf("fault range %q: offset and length must be multiples of %d and the length not 0", s.Range, blockdev.BlockSize)
		}
		r.Start, r.End = off/blockdev.BlockSize, (off+n)/blockdev.BlockSize
	}
	if err := r.Validate(); err != nil {
		return blockdev.Rule{}, err
	}
	return r.Normalized(), nil
}
