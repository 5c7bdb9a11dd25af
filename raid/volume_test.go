package raid_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

const bs = blockdev.BlockSize

// geometry is a layout over a number of members with a chunk size.
type geometry struct {
	layout  string
	members int
	chunk   int64
}

// geometries covers every layout, with chunk sizes from 4 KiB to 64 KiB.
var geometries = []geometry{
	{"raid0", 3, 16 << 10},
	{"raid1", 2, 64 << 10},
	{"mirror:3", 3, 8 << 10},
	{"raid10", 4, 16 << 10},
	{"raid10", 6, 4 << 10},
	{"raid5", 3, 64 << 10},
	{"raid5", 4, 16 << 10},
	{"raid6", 6, 4 << 10},
	{"rs:3+2", 5, 32 << 10},
	{"rs:2+1", 3, 8 << 10},
}

const volSize = 2 << 20

func forEachGeometry(t *testing.T, f func(t *testing.T, c raid.Config, members int)) {
	for _, g := range geometries {
		t.Run(fmt.Sprintf("%s-%d-%dK", g.layout, g.members, g.chunk>>10), func(t *testing.T) {
			t.Parallel()
			f(t, raid.Config{Layout: g.layout, Chunk: g.chunk, Size: volSize}, g.members)
		})
	}
}

// seeded returns a random source and logs how to repeat a failing run.
func seeded(t *testing.T) *rand.Rand {
	seed := uint64(rand.Int64())
	if s := os.Getenv("LOCKSTEP_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reproduce with: LOCKSTEP_SEED=%d go test -race -run '^%s$' ./raid/", seed, t.Name())
		}
	})
	return rand.New(rand.NewPCG(seed, seed))
}

// randomOps runs n random writes, reads and flushes against the volume and
// the model.
func randomOps(t *testing.T, rng *rand.Rand, v *raid.Volume, m raidtest.Model, n int, maxLen int64) {
	t.Helper()
	size := int64(len(m))
	for range n {
		off, l := raidtest.RandomRange(rng, size, maxLen)
		switch r := rng.IntN(20); {
		case r < 10:
			p := make([]byte, l)
			raidtest.Fill(rng, p)
			if _, err := v.WriteAt(p, off); err != nil {
				t.Fatalf("WriteAt(%d bytes at %d): %v", l, off, err)
			}
			copy(m[off:], p)
		case r < 19:
			raidtest.Expect(t, v, m, off, l)
		default:
			if err := v.Flush(); err != nil {
				t.Fatalf("Flush: %v", err)
			}
		}
	}
}

func TestModelEveryLayout(t *testing.T) {
	forEachGeometry(t, func(t *testing.T, c raid.Config, members int) {
		rng := seeded(t)
		a := raidtest.New(t, c, members)
		m := make(raidtest.Model, volSize)
		randomOps(t, rng, a.Vol, m, 4000, 2*c.Chunk*int64(members))
		raidtest.Expect(t, a.Vol, m, 0, volSize)
		a.Close(t)
		raidtest.CheckOnDisk(t, c, a.Dirs, m)

		// Reopen with the directories in another order: every flushed
		// byte reads back.
		dirs := append([]string(nil), a.Dirs...)
		rng.Shuffle(len(dirs), func(i, j int) { dirs[i], dirs[j] = dirs[j], dirs[i] })
		a.Open(t, dirs...)
		raidtest.Expect(t, a.Vol, m, 0, volSize)
		randomOps(t, rng, a.Vol, m, 300, 3*c.Chunk*int64(members))
		a.Close(t)
		raidtest.CheckOnDisk(t, c, a.Dirs, m)
	})
}

// TestModelVariants runs the model with voting reads, and over O_DIRECT
// members (where unaligned request buffers must be bounced).
func TestModelVariants(t *testing.T) {
	for _, v := range []struct {
		name    string
		layout  string
		members int
		opts    raid.Options
	}{
		{"vote", "mirror:3", 3, raid.Options{ReadPolicy: raid.ReadVote}},
		{"vote", "raid10", 4, raid.Options{ReadPolicy: raid.ReadVote}},
		{"vote", "raid6", 6, raid.Options{ReadPolicy: raid.ReadVote}},
		{"vote", "raid5", 3, raid.Options{ReadPolicy: raid.ReadVote}},
		{"direct", "raid6", 6, raid.Options{Direct: true}},
		{"direct", "raid10", 4, raid.Options{Direct: true}},
	} {
		t.Run(v.name+"/"+v.layout, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			c := raid.Config{Layout: v.layout, Chunk: 8 << 10, Size: volSize}
			a := raidtest.New(t, c, v.members, v.opts)
			m := make(raidtest.Model, volSize)
			randomOps(t, rng, a.Vol, m, 1500, 4*c.Chunk*int64(v.members))
			raidtest.Expect(t, a.Vol, m, 0, volSize)
			a.Close(t)
			raidtest.CheckOnDisk(t, c, a.Dirs, m)
		})
	}
}

// failAll makes every I/O of the given members fail.
func failAll(a *raidtest.Array, slots []int) {
	for _, s := range slots {
		a.Fault(s).Add(blockdev.Rule{Kind: blockdev.FaultError})
	}
}

// pickSlots picks k distinct slots such that losing them leaves the layout
// serving (survivable) or not.
func pickSlots(rng *rand.Rand, l raid.Layout, k int, survivable bool) []int {
	for {
		perm := rng.Perm(l.Members)[:k]
		present := make([]bool, l.Members)
		for i := range present {
			present[i] = true
		}
		for _, s := range perm {
			present[s] = false
		}
		if l.Survives(present) == survivable {
			return perm
		}
	}
}

func TestFailedMembers(t *testing.T) {
	forEachGeometry(t, func(t *testing.T, c raid.Config, members int) {
		rng := seeded(t)
		a := raidtest.New(t, c, members)
		l := a.Vol.Layout()
		m := make(raidtest.Model, volSize)
		maxLen := 3 * c.Chunk * int64(members)
		randomOps(t, rng, a.Vol, m, 300, maxLen)

		// Within redundancy: every read and write goes on as if nothing
		// happened.
		failed := pickSlots(rng, l, l.Redundancy(), true)
		failAll(a, failed)
		randomOps(t, rng, a.Vol, m, 600, maxLen)
		raidtest.Expect(t, a.Vol, m, 0, volSize)

		// Assembly without the failed members is degraded and serves the
		// same data.
		var rest []string
		for i, d := range a.Dirs {
			if !contains(failed, i) {
				rest = append(rest, d)
			}
		}
		a.Open(t, rest...)
		raidtest.Expect(t, a.Vol, m, 0, volSize)
		randomOps(t, rng, a.Vol, m, 300, maxLen)

		// The members missed writes. Given back, those that were fenced
		// stay out; those the policy kept (taking their failing together
		// for a shared fault) are resynced over what they missed.
		a.Open(t, a.Dirs...)
		st := a.Vol.Status()
		for _, s := range failed {
			if st := st.Members[s].State; st != raid.Faulted.String() && st != raid.Rebuilding.String() {
				t.Fatalf("member %d, left out while the array was written, came back %s", s, st)
			}
		}
		raidtest.Expect(t, a.Vol, m, 0, volSize)
		rebuildAll(t, a.Vol)
		raidtest.Expect(t, a.Vol, m, 0, volSize)
		st = a.Vol.Status()
		for _, s := range failed {
			if st := st.Members[s].State; st != raid.Faulted.String() && st != raid.Online.String() {
				t.Fatalf("member %d after its resync: %s", s, st)
			}
		}

		// Beyond redundancy: reads fail with ErrUnrecoverable or return
		// the model's data, never anything else.
		present := make([]bool, l.Members)
		for i := range present {
			present[i] = st.Members[i].State == raid.Online.String()
		}
		for _, s := range rng.Perm(l.Members) {
			if !l.Survives(present) {
				break
			}
			if present[s] {
				present[s] = false
				failAll(a, []int{s})
			}
		}
		fails := 0
		for range 300 {
			off, n := raidtest.RandomRange(rng, volSize, maxLen)
			got := make([]byte, n)
			if _, err := a.Vol.ReadAt(got, off); err != nil {
				if !errors.Is(err, raid.ErrUnrecoverable) {
					t.Fatalf("read beyond redundancy failed with %v, want ErrUnrecoverable", err)
				}
				fails++
				continue
			}
			if string(got) != string(m[off:off+n]) {
				t.Fatalf("read of %d bytes at %d beyond redundancy returned wrong data", n, off)
			}
		}
		if fails == 0 {
			t.Fatal("no read failed with members lost beyond redundancy")
		}
	})
}

func contains(s []int, x int) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

// rot flips one byte of the block at member offset off of slot's data file.
func rot(t *testing.T, dir string, off int64, rng *rand.Rand) {
	t.Helper()
	f, err := os.OpenFile(dir+"/"+blockdev.DataFile, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	at := off + rng.Int64N(bs)
	f.ReadAt(b, at)
	b[0] ^= byte(1 + rng.IntN(255))
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptBlocks(t *testing.T) {
	for _, policy := range []raid.ReadPolicy{raid.ReadFast, raid.ReadVote} {
		t.Run(string(policy), func(t *testing.T) { corruptBlocks(t, policy) })
	}
}

func corruptBlocks(t *testing.T, policy raid.ReadPolicy) {
	forEachGeometry(t, func(t *testing.T, c raid.Config, members int) {
		rng := seeded(t)
		a := raidtest.New(t, c, members, raid.Options{ReadPolicy: policy})
		l := a.Vol.Layout()
		m := make(raidtest.Model, volSize)
		raidtest.Fill(rng, m)
		if _, err := a.Vol.WriteAt(m, 0); err != nil {
			t.Fatal(err)
		}
		a.Close(t)
		stripes := int64(volSize) / (int64(l.Data) * c.Chunk)
		blocksPerChunk := c.Chunk / bs

		// Within redundancy: in any one block column of a stripe, at most
		// Redundancy() chunks rot.
		rotten := map[[2]int64]bool{}
		if r := l.Redundancy(); r > 0 {
			for range 200 {
				s, b := rng.Int64N(stripes), rng.Int64N(blocksPerChunk)
				if rotten[[2]int64{s, b}] {
					continue
				}
				rotten[[2]int64{s, b}] = true
				for _, shard := range pickSlots(rng, l, 1+rng.IntN(r), true) {
					rot(t, a.Dirs[l.Slot(s, shard)], s*c.Chunk+b*bs, rng)
				}
			}
			a.Open(t, a.Dirs...)
			for range 200 {
				off, n := raidtest.RandomRange(rng, volSize, 2*c.Chunk*int64(l.Data))
				raidtest.Expect(t, a.Vol, m, off, n)
			}
			raidtest.Expect(t, a.Vol, m, 0, volSize)
			a.Close(t)
		}

		// Beyond redundancy at one data block, in a column that has not
		// rotted yet: every copy of it, or it and all the parity, rot.
		// That block fails; the rest still reads right.
		s, b := rng.Int64N(stripes), rng.Int64N(blocksPerChunk)
		for rotten[[2]int64{s, b}] {
			s, b = rng.Int64N(stripes), rng.Int64N(blocksPerChunk)
		}
		d := rng.IntN(l.Data)
		victims := []int{}
		for c := range l.Copies {
			victims = append(victims, d*l.Copies+c)
		}
		for p := range l.Parity {
			victims = append(victims, l.Data+p)
		}
		for _, shard := range victims {
			rot(t, a.Dirs[l.Slot(s, shard)], s*c.Chunk+b*bs, rng)
		}
		a.Open(t, a.Dirs...)
		bad := s*int64(l.Data)*c.Chunk + int64(d)*c.Chunk + b*bs
		got := make([]byte, 3*bs)
		lo := max(bad-bs, 0)
		if _, err := a.Vol.ReadAt(got[:min(3*bs, volSize-lo)], lo); !errors.Is(err, raid.ErrUnrecoverable) {
			t.Fatalf("read over a block rotten beyond redundancy = %v, want ErrUnrecoverable", err)
		}
		if bad > 0 {
			raidtest.Expect(t, a.Vol, m, 0, bad)
		}
		if bad+bs < volSize {
			raidtest.Expect(t, a.Vol, m, bad+bs, volSize-bad-bs)
		}
		// A partial write into the block needs its old contents: it fails.
		if _, err := a.Vol.WriteAt([]byte{1, 2, 3}, bad+10); !errors.Is(err, raid.ErrUnrecoverable) {
			t.Fatalf("partial write into a lost block = %v, want ErrUnrecoverable", err)
		}
		// A whole-block write replaces it, and it reads back.
		p := make([]byte, bs)
		raidtest.Fill(rng, p)
		if _, err := a.Vol.WriteAt(p, bad); err != nil {
			t.Fatalf("whole-block write over a lost block: %v", err)
		}
		copy(m[bad:], p)
		raidtest.Expect(t, a.Vol, m, 0, volSize)
	})
}

// TestConcurrentWritersShareStripes runs writers whose blocks interleave, so
// that they hit the same stripes at once (parity read-modify-write races),
// each checking its own blocks against its own model.
func TestConcurrentWritersShareStripes(t *testing.T) {
	forEachGeometry(t, func(t *testing.T, c raid.Config, members int) {
		rng := seeded(t)
		a := raidtest.New(t, c, members)
		const writers = 4
		const blocks = volSize / bs
		m := make(raidtest.Model, volSize)
		seeds := make([]uint64, writers)
		for i := range seeds {
			seeds[i] = rng.Uint64()
		}
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(seeds[w], 0))
				for range 200 {
					blk := int64(rng.IntN(blocks/writers)*writers + w)
					from := rng.Int64N(bs)
					to := from + 1 + rng.Int64N(bs-from)
					p := make([]byte, to-from)
					raidtest.Fill(rng, p)
					if _, err := a.Vol.WriteAt(p, blk*bs+from); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					copy(m[blk*bs+from:], p) // only this writer touches this block
					got := make([]byte, bs)
					if _, err := a.Vol.ReadAt(got, blk*bs); err != nil {
						t.Errorf("writer %d: read: %v", w, err)
						return
					}
					if string(got) != string(m[blk*bs:(blk+1)*bs]) {
						t.Errorf("writer %d: block %d differs from the model", w, blk)
						return
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		raidtest.Expect(t, a.Vol, m, 0, volSize)
		a.Close(t)
		raidtest.CheckOnDisk(t, c, a.Dirs, m)
	})
}

func TestOutOfRange(t *testing.T) {
	a := raidtest.New(t, raid.Config{Layout: "raid5", Chunk: 16 << 10, Size: 1 << 20}, 3)
	if _, err := a.Vol.WriteAt(make([]byte, 2), 1<<20-1); !errors.Is(err, raid.ErrOutOfRange) {
		t.Fatalf("write across the end = %v, want ErrOutOfRange", err)
	}
	if _, err := a.Vol.WriteAt(make([]byte, 1), -1); !errors.Is(err, raid.ErrOutOfRange) {
		t.Fatalf("write at -1 = %v, want ErrOutOfRange", err)
	}
	p := make([]byte, 10)
	if n, err := a.Vol.ReadAt(p, 1<<20-4); n != 4 || err == nil || err.Error() != "EOF" {
		t.Fatalf("read across the end = %d, %v, want 4, EOF", n, err)
	}
	if err := a.Vol.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Vol.ReadAt(p, 0); !errors.Is(err, raid.ErrClosed) {
		t.Fatalf("read after Close = %v, want ErrClosed", err)
	}
	a.Vol = nil
}
