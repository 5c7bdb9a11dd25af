package blockdev_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/blockdev/devicetest"
)

const bs = blockdev.BlockSize

func newFile(t *testing.T, size int64, direct bool) blockdev.Device {
	f, err := blockdev.CreateFile(filepath.Join(t.TempDir(), "data"), size, direct)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// newMember makes a member in a temporary directory, closed at cleanup.
func newMember(t *testing.T, size int64) *blockdev.Member {
	m, err := blockdev.CreateMember(filepath.Join(t.TempDir(), "m"), size, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestConformance(t *testing.T) {
	t.Run("File", func(t *testing.T) {
		devicetest.Run(t, func(t *testing.T, size int64) blockdev.Device { return newFile(t, size, false) })
	})
	t.Run("FileDirect", func(t *testing.T) {
		devicetest.Run(t, func(t *testing.T, size int64) blockdev.Device { return newFile(t, size, true) })
	})
	t.Run("Mem", func(t *testing.T) {
		devicetest.Run(t, func(t *testing.T, size int64) blockdev.Device { return blockdev.NewMem(size) })
	})
	t.Run("FaultyWithoutRules", func(t *testing.T) {
		devicetest.Run(t, func(t *testing.T, size int64) blockdev.Device {
			return blockdev.NewFaulty(blockdev.NewMem(size), 1)
		})
	})
	t.Run("Checked", func(t *testing.T) {
		devicetest.Run(t, func(t *testing.T, size int64) blockdev.Device {
			m := newMember(t, size)
			return blockdev.NewChecked(blockdev.NewMem(size), m.Sums)
		})
	})
}

func TestDirectFileBouncesUnalignedBuffers(t *testing.T) {
	d := newFile(t, 4*bs, true)
	buf := make([]byte, 3*bs+1)
	p := buf[1:] // deliberately misaligned
	for i := range p {
		p[i] = byte(i * 7)
	}
	if _, err := d.WriteAt(p, bs); err != nil {
		t.Fatalf("WriteAt with an unaligned buffer: %v", err)
	}
	got := make([]byte, 3*bs+1)[1:]
	if _, err := d.ReadAt(got, bs); err != nil {
		t.Fatalf("ReadAt with an unaligned buffer: %v", err)
	}
	if !bytes.Equal(got, p) {
		t.Fatal("read back differs")
	}
}

func TestCheckedCatchesCorruptionBlockByBlock(t *testing.T) {
	m := newMember(t, 16*bs)
	raw := blockdev.NewMem(16 * bs)
	c := blockdev.NewChecked(raw, m.Sums)
	p := bytes.Repeat([]byte{0xab}, 8*bs)
	if _, err := c.WriteAt(p, 4*bs); err != nil {
		t.Fatal(err)
	}
	// Rot blocks 5 and 9 underneath the checksum layer.
	for _, b := range []int64{5, 9} {
		blk := make([]byte, bs)
		raw.ReadAt(blk, b*bs)
		blk[100] ^= 1
		raw.WriteAt(blk, b*bs)
	}
	got := make([]byte, 8*bs)
	_, err := c.ReadAt(got, 4*bs)
	var ce *blockdev.ChecksumError
	if !errors.As(err, &ce) || !errors.Is(err, blockdev.ErrChecksum) {
		t.Fatalf("ReadAt over rotted blocks = %v, want a *ChecksumError", err)
	}
	if want := []int64{1, 5}; !slices.Equal(ce.Blocks, want) {
		t.Fatalf("bad blocks = %v, want %v", ce.Blocks, want)
	}
	// Blocks never written must read as zeros; a non-zero one is rot too.
	raw.WriteAt(bytes.Repeat([]byte{1}, bs), 0)
	if _, err := c.ReadAt(make([]byte, bs), 0); !errors.Is(err, blockdev.ErrChecksum) {
		t.Fatalf("rot in a never-written block = %v, want ErrChecksum", err)
	}
}

func TestChecksumsAreDurableAtSync(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	m, err := blockdev.CreateMember(dir, 2048*bs, false)
	if err != nil {
		t.Fatal(err)
	}
	c := blockdev.NewChecked(m.Data, m.Sums)
	// Two pages of the table: blocks 3 and 1500.
	p := bytes.Repeat([]byte{0x5a}, bs)
	for _, b := range []int64{3, 1500} {
		if _, err := c.WriteAt(p, b*bs); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m, err = blockdev.OpenMember(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c = blockdev.NewChecked(m.Data, m.Sums)
	for _, b := range []int64{3, 1500} {
		got := make([]byte, bs)
		if _, err := c.ReadAt(got, b*bs); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("block %d after reopen: err %v, equal %v", b, err, bytes.Equal(got, p))
		}
	}
}

func TestFaultyRules(t *testing.T) {
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 42)
	f.Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpRead, Start: 4, End: 6, Count: 2})
	if got := f.Rules()[0].String(); got != "error reads blocks 4-6 count 2" {
		t.Fatalf("rule prints as %q", got)
	}
	if _, err := f.ReadAt(make([]byte, bs), 0); err != nil {
		t.Fatalf("read outside the rule's range failed: %v", err)
	}
	if _, err := f.WriteAt(make([]byte, bs), 4*bs); err != nil {
		t.Fatalf("write not matched by a read rule failed: %v", err)
	}
	for i := range 2 {
		if _, err := f.ReadAt(make([]byte, 4*bs), 2*bs); !errors.Is(err, blockdev.ErrInjected) {
			t.Fatalf("read %d in range = %v, want ErrInjected", i, err)
		}
	}
	if _, err := f.ReadAt(make([]byte, 4*bs), 2*bs); err != nil {
		t.Fatalf("the rule fired past its count: %v", err)
	}
	if len(f.Rules()) != 0 {
		t.Fatal("an exhausted rule stayed in force")
	}

	f.Add(blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpWrite})
	if _, err := f.WriteAt(make([]byte, bs), 0); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("write under a write rule = %v", err)
	}
	f.Clear()
	if _, err := f.WriteAt(make([]byte, bs), 0); err != nil {
		t.Fatalf("write after Clear: %v", err)
	}
}

func TestFlipIsCaughtByChecksums(t *testing.T) {
	m := newMember(t, 16*bs)
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 7)
	c := blockdev.NewChecked(f, m.Sums)
	if _, err := c.WriteAt(bytes.Repeat([]byte{3}, 8*bs), 0); err != nil {
		t.Fatal(err)
	}
	f.Add(blockdev.Rule{Kind: blockdev.FaultFlip, Ops: blockdev.OpRead, Start: 2, End: 4})
	_, err := c.ReadAt(make([]byte, 8*bs), 0)
	var ce *blockdev.ChecksumError
	if !errors.As(err, &ce) || !slices.Equal(ce.Blocks, []int64{2, 3}) {
		t.Fatalf("flipped read = %v, want bad blocks [2 3]", err)
	}
}

func TestMemberDirectories(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	m, err := blockdev.CreateMember(dir, 8*bs, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Meta.SetLabel([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := blockdev.CreateMember(dir, 8*bs, false); !errors.Is(err, blockdev.ErrAlreadyMember) {
		t.Fatalf("second CreateMember = %v, want ErrAlreadyMember", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err := blockdev.ReadLabel(dir); err != nil || string(l) != "hello" {
		t.Fatalf("ReadLabel = %q, %v", l, err)
	}
	if _, err := blockdev.OpenMember(t.TempDir(), false); !errors.Is(err, blockdev.ErrNotMember) {
		t.Fatalf("OpenMember on an empty directory = %v, want ErrNotMember", err)
	}
	if _, err := blockdev.ReadLabel(t.TempDir()); !errors.Is(err, blockdev.ErrNotMember) {
		t.Fatalf("ReadLabel on an empty directory = %v, want ErrNotMember", err)
	}
}

func TestVectoredIO(t *testing.T) {
	for _, direct := range []bool{false, true} {
		f := newFile(t, 16*bs, direct)
		unaligned := make([]byte, bs+1)[1:]
		bufs := [][]byte{blockdev.AllocAligned(2 * bs), unaligned, blockdev.AllocAligned(bs)}
		for i, b := range bufs {
			for j := range b {
				b[j] = byte(i*50 + j)
			}
		}
		if n, err := blockdev.WritevAt(f, bufs, 3*bs); err != nil || n != 4*bs {
			t.Fatalf("direct=%v: WritevAt = %d, %v", direct, n, err)
		}
		whole := make([]byte, 4*bs)
		if _, err := f.ReadAt(whole, 3*bs); err != nil {
			t.Fatal(err)
		}
		if want := bytes.Join(bufs, nil); !bytes.Equal(whole, want) {
			t.Fatalf("direct=%v: vectored write did not land back to back", direct)
		}
		back := [][]byte{make([]byte, bs+1)[1:], blockdev.AllocAligned(3 * bs)}
		if _, err := blockdev.ReadvAt(f, back, 3*bs); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bytes.Join(back, nil), whole) {
			t.Fatalf("direct=%v: vectored read differs", direct)
		}
		if _, err := blockdev.ReadvAt(f, [][]byte{make([]byte, bs), make([]byte, 100)}, 0); !errors.Is(err, blockdev.ErrUnaligned) {
			t.Fatalf("vectored read with a short piece = %v, want ErrUnaligned", err)
		}
		if _, err := blockdev.WritevAt(f, [][]byte{make([]byte, 8*bs), make([]byte, 8*bs)}, bs); !errors.Is(err, blockdev.ErrOutOfRange) {
			t.Fatalf("vectored write past the end = %v, want ErrOutOfRange", err)
		}
	}
}

func TestVectoredChecksumErrorsCountAcrossPieces(t *testing.T) {
	m := newMember(t, 16*bs)
	for _, faulty := range []bool{false, true} {
		var under blockdev.Device = blockdev.NewMem(16 * bs)
		raw := under
		if faulty {
			under = blockdev.NewFaulty(under, 3)
		}
		c := blockdev.NewChecked(under, m.Sums)
		if _, err := blockdev.WritevAt(c, [][]byte{bytes.Repeat([]byte{1}, 2*bs), bytes.Repeat([]byte{2}, 3*bs)}, 0); err != nil {
			t.Fatal(err)
		}
		raw.WriteAt(make([]byte, bs), 3*bs) // rot block 3: the second piece's second block
		_, err := blockdev.ReadvAt(c, [][]byte{make([]byte, 2*bs), make([]byte, 3*bs)}, 0)
		var ce *blockdev.ChecksumError
		if !errors.As(err, &ce) || !slices.Equal(ce.Blocks, []int64{3}) {
			t.Fatalf("faulty=%v: vectored read over rot = %v, want block 3", faulty, err)
		}
	}
}

func TestRogueReturnsAnotherBlockAndIsCaught(t *testing.T) {
	m := newMember(t, 16*bs)
	f := blockdev.NewFaulty(blockdev.NewMem(16*bs), 9)
	c := blockdev.NewChecked(f, m.Sums)
	p := make([]byte, 4*bs)
	for i := range p {
		p[i] = byte(i / bs)
	}
	if _, err := c.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	f.Add(blockdev.Rule{Kind: blockdev.FaultRogue, Ops: blockdev.OpRead, Start: 2, End: 3})
	got := make([]byte, 4*bs)
	_, err := f.ReadAt(got, 0)
	if err != nil || !bytes.Equal(got[2*bs:3*bs], p[3*bs:4*bs]) || !bytes.Equal(got[:2*bs], p[:2*bs]) {
		t.Fatalf("rogue read: err %v; block 2 should hold block 3's data and the rest its own", err)
	}
	_, err = c.ReadAt(got, 0)
	var ce *blockdev.ChecksumError
	if !errors.As(err, &ce) || !slices.Equal(ce.Blocks, []int64{2}) {
		t.Fatalf("rogue read through the checksums = %v, want block 2 bad", err)
	}
}
