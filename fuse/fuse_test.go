package fuse_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/fuse"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// needFUSE skips a test on a machine that cannot mount FUSE file systems.
func needFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (a kernel with FUSE): ", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount without fusermount3")
	}
}

// mount serves b in a temporary directory and unmounts it at cleanup.
func mount(t *testing.T, b fuse.Backend, o fuse.Options) (*fuse.Mount, string) {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	m, err := fuse.Serve(dir, b, o)
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
		m.Wait()
	})
	return m, filepath.Join(dir, "volume")
}

type recorder struct {
	mu  sync.Mutex
	ops map[fuse.Op]int
}

func (r *recorder) Observe(op fuse.Op, _ int, _ time.Duration, _ error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops[op]++
}

func (r *recorder) count(op fuse.Op) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ops[op]
}

func TestMountedVolumeFollowsTheModel(t *testing.T) {
	for _, wb := range []bool{false, true} {
		name := map[bool]string{false: "write-through", true: "writeback-cache"}[wb]
		t.Run(name, func(t *testing.T) {
			c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 8 << 20}
			a := raidtest.New(t, c, 6)
			rec := &recorder{ops: map[fuse.Op]int{}}
			_, path := mount(t, a.Vol, fuse.Options{WritebackCache: wb, Observer: rec})
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != c.Size || !fi.Mode().IsRegular() {
				t.Fatalf("volume file: size %d mode %v, want %d and a regular file", fi.Size(), fi.Mode(), c.Size)
			}
			ents, err := os.ReadDir(filepath.Dir(path))
			if err != nil || len(ents) != 1 || ents[0].Name() != "volume" {
				t.Fatalf("mount lists %v (err %v), want only volume", ents, err)
			}
			rng := rand.New(rand.NewPCG(3, 4))
			model := make(raidtest.Model, c.Size)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for i := range 300 {
				off, n := raidtest.RandomRange(rng, c.Size, 3<<20)
				switch i % 5 {
				case 0, 1, 2:
					raidtest.Fill(rng, model[off:off+n])
					if _, err := f.WriteAt(model[off:off+n], off); err != nil {
						t.Fatalf("write %d bytes at %d: %v", n, off, err)
					}
				case 3:
					off, n = off&^4095, max(n&^4095, 4096)
					n = min(n, c.Size-off)
					if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n); err != nil {
						t.Fatalf("punch %d bytes at %d: %v", n, off, err)
					}
					clear(model[off : off+n])
				case 4:
					if err := f.Sync(); err != nil {
						t.Fatalf("fsync: %v", err)
					}
				}
				got := make([]byte, n)
				if _, err := f.ReadAt(got, off); err != nil {
					t.Fatalf("read %d bytes at %d: %v", n, off, err)
				}
				if !bytes.Equal(got, model[off:off+n]) {
					t.Fatalf("op %d: %d bytes at %d differ from the model", i, n, off)
				}
			}
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			// What reached the engine is what the model says.
			raidtest.Expect(t, a.Vol, model, 0, c.Size)
			if rec.count(fuse.OpFlush) == 0 || rec.count(fuse.OpDiscard) == 0 || rec.count(fuse.OpWrite) == 0 {
				t.Errorf("observer saw %v, want flushes, discards and writes", rec.ops)
			}
		})
	}
}

func TestMountRefusesWhatAVolumeCannotDo(t *testing.T) {
	c := raid.Config{Layout: "raid1", Chunk: 64 << 10, Size: 1 << 20}
	a := raidtest.New(t, c, 2)
	_, path := mount(t, a.Vol, fuse.Options{})
	if err := os.Truncate(path, 10); !errors.Is(err, syscall.EPERM) {
		t.Errorf("truncate = %v, want EPERM", err)
	}
	if err := os.Chmod(path, 0o644); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chmod = %v, want EPERM", err)
	}
	if _, err := os.Create(filepath.Join(filepath.Dir(path), "other")); err == nil {
		t.Error("creating a second file succeeded")
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("x"), c.Size); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write at the end = %v, want ENOSPC", err)
	}
	p := bytes.Repeat([]byte{9}, 8192)
	// The part that fits lands; the rest is refused.
	if _, err := f.WriteAt(p, c.Size-4096); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write across the end = %v, want ENOSPC for what does not fit", err)
	}
	if err := unix.Fallocate(int(f.Fd()), 0, 0, c.Size+4096); !errors.Is(err, syscall.EFBIG) {
		t.Errorf("fallocate past the end = %v, want EFBIG", err)
	}
	if fi, _ := f.Stat(); fi.Size() != c.Size {
		t.Errorf("size %d after refused requests, want %d", fi.Size(), c.Size)
	}
	got := make([]byte, 4096)
	if _, err := a.Vol.ReadAt(got, c.Size-4096); err != nil || !bytes.Equal(got, p[:4096]) {
		t.Errorf("the last block does not hold what was written (err %v)", err)
	}
}

// Failed engine requests reach the client as EIO, never as wrong data.
func TestEngineFailuresAreEIO(t *testing.T) {
	c := raid.Config{Layout: "raid0", Chunk: 16 << 10, Size: 1 << 20}
	a := raidtest.New(t, c, 2, raid.Options{NoMonitor: true})
	rec := &recorder{ops: map[fuse.Op]int{}}
	_, path := mount(t, a.Vol, fuse.Options{Observer: rec})
	a.Fault(1).Add(blockdevErrorReads())
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	if _, err := f.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read over a failing raid0 member = %v, want EIO", err)
	}
	if rec.count(fuse.OpRead) == 0 {
		t.Error("the failed read was not observed")
	}
}

func blockdevErrorReads() blockdev.Rule {
	return blockdev.Rule{Kind: blockdev.FaultError, Ops: blockdev.OpRead}
}
