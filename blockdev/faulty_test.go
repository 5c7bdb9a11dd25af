package blockdev_test

import (
	"bytes"
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
)

// fill returns n blocks, each filled with its index plus base.
func fill(n int, base byte) []byte {
	p := make([]byte, n*bs)
	for i := range p {
		p[i] = base + byte(i/bs)
	}
	return p
}

// badBlocks reads n blocks at 0 through the checksums and returns the ones
// that fail.
func badBlocks(t *testing.T, c *blockdev.Checked, n int) []int64 {
	t.Helper()
	_, err := c.ReadAt(make([]byte, n*bs), 0)
	var ce *blockdev.ChecksumError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ce):
		return ce.Blocks
	}
	t.Fatalf("read: %v", err)
	return nil
}

func TestFaultKindsParseAndPrint(t *testing.T) {
	for _, name := range blockdev.FaultKinds() {
		k, err := blockdev.ParseFaultKind(name)
		if err != nil || k.String() != name {
			t.Errorf("ParseFaultKind(%q) = %v, %v", name, k, err)
		}
	}
	if _, err := blockdev.ParseFaultKind("melt"); err == nil {
		t.Error("an unknown fault kind parsed")
	}
	for s, want := range map[string]blockdev.Op{"read": blockdev.OpRead, "write": blockdev.OpWrite, "both": blockdev.OpRead | blockdev.OpWrite} {
		if op, err := blockdev.ParseOp(s); err != nil || op != want {
			t.Errorf("ParseOp(%q) = %v, %v", s, op, err)
		}
	}
	r := blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpWrite, Start: 8, Delay: 5 * time.Millisecond, Jitter: time.Millisecond, For: time.Second, Prob: 0.25}
	if got, want := r.String(), "delay writes blocks 8-end p 0.25 delay 5ms+1ms for 1s"; got != want {
		t.Errorf("rule prints as %q, want %q", got, want)
	}
}

func TestFaultRulesAreValidated(t *testing.T) {
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 1)
	for _, r := range []blockdev.Rule{
		{Kind: blockdev.FaultError, Start: 6, End: 6},
		{Kind: blockdev.FaultError, Count: -1},
		{Kind: blockdev.FaultError, Prob: 1.5},
		{Kind: blockdev.FaultDelay},
		{Kind: blockdev.FaultTorn, Ops: blockdev.OpRead},
		{Kind: blockdev.FaultFull, Ops: blockdev.OpRead},
		{Kind: blockdev.FaultFlip, Ops: blockdev.OpWrite},
		{Kind: blockdev.FaultKind(99)},
	} {
		if err := f.Add(r); err == nil {
			t.Errorf("rule %+v was accepted", r)
		}
	}
	if len(f.Rules()) != 0 {
		t.Fatalf("refused rules are in force: %v", f.Rules())
	}
}

func TestFaultsExpireAfterTheirDuration(t *testing.T) {
	now := time.Unix(1000, 0)
	faults := blockdev.NewFaults(1)
	faults.Now = func() time.Time { return now }
	f := faults.Wrap(blockdev.NewMem(16 * bs))
	if err := f.Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpRead, For: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(make([]byte, bs), 0); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("read within the rule's time = %v, want ErrInjected", err)
	}
	if a := f.Active(); len(a) != 1 || a[0].Fired != 1 || !a[0].Until.Equal(now.Add(10*time.Second)) {
		t.Fatalf("active faults = %+v", a)
	}
	now = now.Add(10 * time.Second)
	if _, err := f.ReadAt(make([]byte, bs), 0); err != nil {
		t.Fatalf("read after the rule's time = %v", err)
	}
	if len(f.Active()) != 0 {
		t.Fatal("an expired rule is still reported")
	}
}

func TestFaultsAreReproducibleBySeed(t *testing.T) {
	pattern := func(seed uint64) []bool {
		f := blockdev.NewFaulty(blockdev.NewMem(16*bs), seed)
		f.Add(blockdev.Rule{Kind: blockdev.FaultError, Prob: 0.5})
		var out []bool
		for i := range 64 {
			_, err := f.ReadAt(make([]byte, bs), int64(i%16)*bs)
			out = append(out, err != nil)
		}
		return out
	}
	a, b, c := pattern(5), pattern(5), pattern(6)
	if !slices.Equal(a, b) {
		t.Fatal("the same seed gave different faults")
	}
	if slices.Equal(a, c) {
		t.Fatal("different seeds gave the same 64 coin tosses")
	}
	if n := len(slices.DeleteFunc(slices.Clone(a), func(x bool) bool { return !x })); n < 16 || n > 48 {
		t.Fatalf("a rate of 0.5 failed %d of 64 reads", n)
	}
}

func TestStallHoldsIOUntilCleared(t *testing.T) {
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 1)
	f.Add(blockdev.Rule{Kind: blockdev.FaultStall, Ops: blockdev.OpRead})
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(make([]byte, bs), 0)
		done <- err
	}()
	for f.Active()[0].Fired == 0 {
		time.Sleep(time.Millisecond) // waiting for the reader to reach the stall
	}
	select {
	case err := <-done:
		t.Fatalf("a stalled read returned (%v) before the stall was cleared", err)
	default:
	}
	if _, err := f.WriteAt(make([]byte, bs), bs); err != nil {
		t.Fatalf("a write, which the stall does not cover, failed: %v", err)
	}
	f.Clear()
	if err := <-done; err != nil {
		t.Fatalf("the stalled read, once cleared: %v", err)
	}
}

func TestStallWithADurationEnds(t *testing.T) {
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 1)
	f.Add(blockdev.Rule{Kind: blockdev.FaultStall, For: 30 * time.Millisecond})
	start := time.Now()
	if _, err := f.ReadAt(make([]byte, bs), 0); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Fatalf("the read was held %v, not until the stall ended", time.Since(start))
	}
}

func TestDelayHoldsEachIO(t *testing.T) {
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 1)
	f.Add(blockdev.Rule{Kind: blockdev.FaultDelay, Delay: 10 * time.Millisecond, Jitter: 5 * time.Millisecond, Count: 2})
	start := time.Now()
	for range 3 {
		if _, err := f.ReadAt(make([]byte, bs), 0); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("two delayed reads took %v, less than their delay", d)
	}
	if len(f.Rules()) != 0 {
		t.Fatal("the delay outlived its count")
	}
}

func TestRotOnWriteLandsCorruptedAndStays(t *testing.T) {
	m := newMember(t, 16*bs)
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 3)
	c := blockdev.NewChecked(f, m.Sums)
	f.Add(blockdev.Rule{Kind: blockdev.FaultRot, Ops: blockdev.OpWrite, Start: 2, End: 4})
	p := fill(8, 1)
	want := slices.Clone(p)
	if _, err := c.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, want) {
		t.Fatal("rot corrupted the caller's buffer")
	}
	f.Clear()
	if bad := badBlocks(t, c, 8); !slices.Equal(bad, []int64{2, 3}) {
		t.Fatalf("after rotten writes and a clear, bad blocks %v, want [2 3]", bad)
	}
}

func TestRotOnReadCorruptsTheDisk(t *testing.T) {
	m := newMember(t, 16*bs)
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 4)
	c := blockdev.NewChecked(f, m.Sums)
	if _, err := c.WriteAt(fill(8, 1), 0); err != nil {
		t.Fatal(err)
	}
	f.Add(blockdev.Rule{Kind: blockdev.FaultRot, Ops: blockdev.OpRead, Start: 5, End: 6, Count: 1})
	if bad := badBlocks(t, c, 8); !slices.Equal(bad, []int64{5}) {
		t.Fatalf("read under rot: bad blocks %v, want [5]", bad)
	}
	if len(f.Rules()) != 0 {
		t.Fatal("the rot rule outlived its count")
	}
	if bad := badBlocks(t, c, 8); !slices.Equal(bad, []int64{5}) {
		t.Fatalf("rot did not stay on the disk: bad blocks %v, want [5]", bad)
	}
}

func TestFlipDoesNotTouchTheDisk(t *testing.T) {
	m := newMember(t, 16*bs)
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 4)
	c := blockdev.NewChecked(f, m.Sums)
	if _, err := c.WriteAt(fill(8, 1), 0); err != nil {
		t.Fatal(err)
	}
	f.Add(blockdev.Rule{Kind: blockdev.FaultFlip, Start: 5, End: 6, Count: 1})
	if bad := badBlocks(t, c, 8); !slices.Equal(bad, []int64{5}) {
		t.Fatalf("read under flip: bad blocks %v, want [5]", bad)
	}
	if bad := badBlocks(t, c, 8); bad != nil {
		t.Fatalf("a flip on the way stayed on the disk: bad blocks %v", bad)
	}
}

func TestTornWriteLandsAPrefixAndTheDeviceVanishes(t *testing.T) {
	for seed := range uint64(6) {
		mem := blockdev.NewMem(16 * bs)
		old := fill(16, 100)
		mem.WriteAt(old, 0)
		f := blockdev.NewFaulty(mem, seed)
		f.Add(blockdev.Rule{Kind: blockdev.FaultTorn, Start: 4, End: 5})
		if _, err := f.WriteAt(fill(2, 1), 0); err != nil {
			t.Fatalf("a write outside the torn range failed: %v", err)
		}
		p := fill(8, 10)
		n, err := f.WriteAt(p, 2*bs)
		if !errors.Is(err, blockdev.ErrVanished) || !errors.Is(err, blockdev.ErrInjected) {
			t.Fatalf("torn write = %v, want ErrVanished", err)
		}
		if !f.Vanished() {
			t.Fatal("the device is still there after a torn write")
		}
		if _, err := f.ReadAt(make([]byte, bs), 14*bs); !errors.Is(err, blockdev.ErrVanished) {
			t.Fatalf("read after the tear = %v, want ErrVanished", err)
		}
		if err := f.Sync(); !errors.Is(err, blockdev.ErrVanished) {
			t.Fatalf("sync after the tear = %v, want ErrVanished", err)
		}
		got := make([]byte, 8*bs)
		mem.ReadAt(got, 2*bs)
		whole := n / bs
		half := got[whole*bs : (whole+1)*bs]
		if n%bs != 0 || whole >= 8 ||
			!bytes.Equal(got[:whole*bs], p[:whole*bs]) ||
			!bytes.Equal(half[:bs/2], p[whole*bs:whole*bs+bs/2]) ||
			!bytes.Equal(half[bs/2:], old[(2+whole)*bs+bs/2:(3+whole)*bs]) ||
			!bytes.Equal(got[(whole+1)*bs:], old[(3+whole)*bs:10*bs]) {
			t.Fatalf("seed %d: torn write reported %d bytes; the disk does not hold that prefix, half a block, then old data", seed, n)
		}
		f.Clear()
		if _, err := f.ReadAt(make([]byte, bs), 14*bs); err != nil {
			t.Fatalf("read after clearing the faults: %v", err)
		}
	}
}

func TestVanishFailsEverythingUntilCleared(t *testing.T) {
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 1)
	f.Add(blockdev.Rule{Kind: blockdev.FaultVanish, Ops: blockdev.OpWrite, Start: 8})
	if _, err := f.ReadAt(make([]byte, bs), 8*bs); err != nil {
		t.Fatalf("a read the write-only rule does not match failed: %v", err)
	}
	if _, err := f.WriteAt(make([]byte, bs), 9*bs); !errors.Is(err, blockdev.ErrVanished) {
		t.Fatalf("write in range = %v, want ErrVanished", err)
	}
	if _, err := f.ReadAt(make([]byte, bs), 0); !errors.Is(err, blockdev.ErrVanished) {
		t.Fatalf("read outside the range after vanishing = %v, want ErrVanished", err)
	}
	if err := blockdev.Discard(f, 0, bs); !errors.Is(err, blockdev.ErrVanished) {
		t.Fatalf("discard after vanishing = %v, want ErrVanished", err)
	}
	f.Clear()
	if _, err := f.WriteAt(make([]byte, bs), 9*bs); err != nil {
		t.Fatalf("write after clearing = %v", err)
	}
}

func TestFullFailsWritesWithENOSPC(t *testing.T) {
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 1)
	f.Add(blockdev.Rule{Kind: blockdev.FaultFull})
	_, err := f.WriteAt(make([]byte, bs), 0)
	if !errors.Is(err, syscall.ENOSPC) || !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("write to a full disk = %v, want ENOSPC", err)
	}
	if _, err := f.ReadAt(make([]byte, bs), 0); err != nil {
		t.Fatalf("read from a full disk = %v", err)
	}
	if r := f.Rules(); len(r) != 1 || r[0].Ops != blockdev.OpWrite {
		t.Fatalf("a full rule given no operations applies to %v, want writes", r)
	}
}

func TestFaultsOutliveTheDeviceTheyWrap(t *testing.T) {
	faults := blockdev.NewFaults(1)
	faults.Wrap(blockdev.NewMem(16 * bs)).Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpRead})
	again := faults.Wrap(blockdev.NewMem(16 * bs)) // the member reopened
	if _, err := again.ReadAt(make([]byte, bs), 0); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("a reopened device's read = %v, want the fault still in force", err)
	}
}
