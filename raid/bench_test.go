package raid_test

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
)

// benchSize is the size of every benchmark target: large enough to defeat
// the disk's own cache, small enough to fill quickly.
const benchSize = 512 << 20

// rw is what a benchmark drives: a raw file or a volume.
type rw interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}

// benchTarget is one thing measured: its name, how much of the raw disk's
// bandwidth its writes can use (1/N for mirrors, K/(K+M) for parity), and
// how to open it.
type benchTarget struct {
	name        string
	writeFactor float64
	open        func(b *testing.B) (rw, func())
}

func volumeTarget(layout string, members int) benchTarget {
	l, err := raid.ParseLayout(layout, members)
	if err != nil {
		panic(err)
	}
	factor := float64(l.Data) / float64(l.Members)
	return benchTarget{name: fmt.Sprintf("%s-%d", layout, members), writeFactor: factor, open: func(b *testing.B) (rw, func()) {
		root := b.TempDir()
		var dirs []string
		for i := range members {
			dirs = append(dirs, filepath.Join(root, fmt.Sprint("m", i)))
		}
		if _, err := raid.Create(dirs, raid.Config{Layout: layout, Size: benchSize}); err != nil {
			b.Fatal(err)
		}
		v, err := raid.Open(dirs, raid.Options{Direct: true, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return v, func() { v.Close() }
	}}
}

var benchTargets = []benchTarget{
	{name: "raw", writeFactor: 1, open: func(b *testing.B) (rw, func()) {
		f, err := blockdev.CreateFile(filepath.Join(b.TempDir(), "raw"), benchSize, true)
		if err != nil {
			b.Fatal(err)
		}
		return f, func() { f.Close() }
	}},
	volumeTarget("raid0", 4),
	volumeTarget("raid1", 2),
	volumeTarget("raid6", 6),
}

// benchRounds is how many times each workload goes round the targets.
const benchRounds = 5

// queueDepth is how many requests the throughput benchmarks keep in flight.
const queueDepth = 16

// parallelism is the b.SetParallelism that keeps queueDepth requests in
// flight: RunParallel starts that many goroutines per P, and a process that
// serves a volume runs with more Ps than CPUs (raid.Procs), so that a
// figure's queue depth does not change with them.
func parallelism() int { return max(1, queueDepth/runtime.GOMAXPROCS(0)) }

// BenchmarkIO measures sequential 1 MiB and random 4 KiB I/O at queue depth
// 16 on a raw O_DIRECT file and on volumes over O_DIRECT members in the same
// folder. Every target is filled first; then each workload runs on all
// targets in turn, benchRounds times over, so that a figure and its baseline
// meet the disk in the same state (a virtual disk's speed drifts with what
// was written just before). `make bench` prints the median of the rounds
// beside the raw one.
func BenchmarkIO(b *testing.B) {
	opened := make([]rw, len(benchTargets))
	for i, tg := range benchTargets {
		t, closeTarget := tg.open(b)
		defer closeTarget()
		fill(b, t)
		opened[i] = t
	}
	for _, w := range []struct {
		name string
		run  func(b *testing.B, t rw, tg benchTarget)
	}{
		{"seqwrite-1M", func(b *testing.B, t rw, tg benchTarget) { sequential(b, t, true, tg.writeFactor) }},
		{"seqread-1M", func(b *testing.B, t rw, tg benchTarget) { sequential(b, t, false, 1) }},
		{"randread-4K", func(b *testing.B, t rw, _ benchTarget) { random(b, t, false) }},
		{"randwrite-4K", func(b *testing.B, t rw, _ benchTarget) { random(b, t, true) }},
	} {
		for round := range benchRounds {
			// Each round starts at another target, so that none is always
			// the one measured after the others have drawn on the disk.
			for k := range benchTargets {
				i := (k + round) % len(benchTargets)
				tg := benchTargets[i]
				b.Run(w.name+"/"+tg.name, func(b *testing.B) { w.run(b, opened[i], tg) })
			}
		}
	}
}

// fill writes the first size bytes of a target once so that reads hit real
// data (size defaults to benchSize).
func fill(b *testing.B, t rw, size ...int64) {
	n := int64(benchSize)
	if len(size) > 0 {
		n = size[0]
	}
	p := blockdev.AllocAligned(1 << 20)
	for i := range p {
		p[i] = byte(i)
	}
	for off := int64(0); off < n; off += int64(len(p)) {
		if _, err := t.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
}

func sequential(b *testing.B, t rw, write bool, factor float64) {
	const n = 1 << 20
	var next atomic.Int64
	b.SetBytes(n)
	b.ReportMetric(factor, "limit-factor")
	b.SetParallelism(parallelism())
	b.RunParallel(func(pb *testing.PB) {
		p := blockdev.AllocAligned(n)
		for pb.Next() {
			off := (next.Add(1) - 1) * n % benchSize
			if err := transfer(t, p, off, write); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// transfer writes or reads p at off.
func transfer(t rw, p []byte, off int64, write bool) error {
	var err error
	if write {
		_, err = t.WriteAt(p, off)
	} else {
		_, err = t.ReadAt(p, off)
	}
	return err
}

func random(b *testing.B, t rw, write bool) {
	const n = 4096
	var seed atomic.Uint64
	b.SetBytes(n)
	b.SetParallelism(parallelism())
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 0))
		p := blockdev.AllocAligned(n)
		for pb.Next() {
			off := rng.Int64N(benchSize/n) * n
			if err := transfer(t, p, off, write); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
