// Package devicetest is the conformance suite for blockdev.Device: every
// implementation runs it, so that they all keep the same contract.
package devicetest

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
)

// Size is the size of the devices the suite asks for.
const Size = 64 * blockdev.BlockSize

// Run checks the Device contract on devices made by open, which returns a
// fresh, zeroed device of the given size.
func Run(t *testing.T, open func(t *testing.T, size int64) blockdev.Device) {
	t.Run("ZeroedAndSized", func(t *testing.T) {
		d := open(t, Size)
		if d.Size() != Size {
			t.Fatalf("Size() = %d, want %d", d.Size(), Size)
		}
		p := make([]byte, Size)
		if _, err := d.ReadAt(p, 0); err != nil {
			t.Fatalf("ReadAt: %v", err)
		}
		if !bytes.Equal(p, make([]byte, Size)) {
			t.Fatal("a fresh device does not read as zeros")
		}
	})
	t.Run("RefusesBadRanges", func(t *testing.T) {
		d := open(t, Size)
		cases := []struct {
			n    int
			off  int64
			want error
		}{
			{blockdev.BlockSize, 1, blockdev.ErrUnaligned},
			{100, 0, blockdev.ErrUnaligned},
			{blockdev.BlockSize, Size, blockdev.ErrOutOfRange},
			{2 * blockdev.BlockSize, Size - blockdev.BlockSize, blockdev.ErrOutOfRange},
			{blockdev.BlockSize, -blockdev.BlockSize, blockdev.ErrOutOfRange},
		}
		for _, c := range cases {
			if _, err := d.WriteAt(bytes.Repeat([]byte{7}, c.n), c.off); !errors.Is(err, c.want) {
				t.Errorf("WriteAt(%d bytes at %d) = %v, want %v", c.n, c.off, err, c.want)
			}
			if _, err := d.ReadAt(make([]byte, c.n), c.off); !errors.Is(err, c.want) {
				t.Errorf("ReadAt(%d bytes at %d) = %v, want %v", c.n, c.off, err, c.want)
			}
		}
		p := make([]byte, Size)
		if _, err := d.ReadAt(p, 0); err != nil || !bytes.Equal(p, make([]byte, Size)) {
			t.Fatalf("a refused write changed the device (err %v)", err)
		}
	})
	t.Run("ReadsWhatWasWritten", func(t *testing.T) {
		d := open(t, Size)
		model := make([]byte, Size)
		rng := rand.New(rand.NewPCG(1, 2))
		for range 200 {
			off := int64(rng.IntN(Size/blockdev.BlockSize)) * blockdev.BlockSize
			n := (1 + rng.IntN(int((Size-off)/blockdev.BlockSize))) * blockdev.BlockSize
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(rng.Uint32())
			}
			if _, err := d.WriteAt(p, off); err != nil {
				t.Fatalf("WriteAt: %v", err)
			}
			copy(model[off:], p)
			got := make([]byte, Size)
			if _, err := d.ReadAt(got, 0); err != nil {
				t.Fatalf("ReadAt: %v", err)
			}
			if !bytes.Equal(got, model) {
				t.Fatalf("after a write of %d bytes at %d the device differs from the model", n, off)
			}
		}
		if err := d.Sync(); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	})
	t.Run("DiscardReadsAsZeros", func(t *testing.T) {
		d := open(t, Size)
		model := bytes.Repeat([]byte{0xa5}, Size)
		if _, err := d.WriteAt(model, 0); err != nil {
			t.Fatalf("WriteAt: %v", err)
		}
		for _, r := range [][2]int64{{0, 1}, {5, 3}, {63, 1}, {20, 0}} {
			off, n := r[0]*blockdev.BlockSize, r[1]*blockdev.BlockSize
			if err := blockdev.Discard(d, off, n); err != nil {
				t.Fatalf("Discard(%d, %d): %v", off, n, err)
			}
			clear(model[off : off+n])
		}
		for _, bad := range [][2]int64{{1, blockdev.BlockSize}, {0, 100}, {Size - blockdev.BlockSize, 2 * blockdev.BlockSize}, {-blockdev.BlockSize, blockdev.BlockSize}} {
			if err := blockdev.Discard(d, bad[0], bad[1]); err == nil {
				t.Errorf("Discard(%d, %d) succeeded, want an error", bad[0], bad[1])
			}
		}
		got := make([]byte, Size)
		if _, err := d.ReadAt(got, 0); err != nil {
			t.Fatalf("ReadAt: %v", err)
		}
		if !bytes.Equal(got, model) {
			t.Fatal("after discards the device differs from the model")
		}
	})
	t.Run("ConcurrentDisjointWrites", func(t *testing.T) {
		d := open(t, Size)
		const per = Size / 8
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				p := bytes.Repeat([]byte{byte(w + 1)}, per)
				if _, err := d.WriteAt(p, int64(w*per)); err != nil {
					t.Errorf("WriteAt: %v", err)
				}
			})
		}
		wg.Wait()
		got := make([]byte, Size)
		if _, err := d.ReadAt(got, 0); err != nil {
			t.Fatalf("ReadAt: %v", err)
		}
		for w := range 8 {
			if !bytes.Equal(got[w*per:(w+1)*per], bytes.Repeat([]byte{byte(w + 1)}, per)) {
				t.Fatalf("writer %d's range was not what it wrote", w)
			}
		}
	})
	t.Run("ClosedRefusesIO", func(t *testing.T) {
		d := open(t, Size)
		if err := d.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if _, err := d.ReadAt(make([]byte, blockdev.BlockSize), 0); !errors.Is(err, blockdev.ErrClosed) {
			t.Errorf("ReadAt after Close = %v, want ErrClosed", err)
		}
		if _, err := d.WriteAt(make([]byte, blockdev.BlockSize), 0); !errors.Is(err, blockdev.ErrClosed) {
			t.Errorf("WriteAt after Close = %v, want ErrClosed", err)
		}
		if err := d.Sync(); !errors.Is(err, blockdev.ErrClosed) {
			t.Errorf("Sync after Close = %v, want ErrClosed", err)
		}
	})
}
