package scrub_test

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/scrub"
)

// backgroundSize is the volume the background benchmarks work on.
const backgroundSize = 384 << 20

// BenchmarkBackground measures, in rounds that interleave each figure with
// its baseline: an unthrottled rebuild of one raid6 member (bytes written
// to it per second) beside sequential writes to a plain O_DIRECT file; a
// scrub (volume bytes checked per second) beside sequential reads of that
// file; and 4 KiB random reads at queue depth 4, idle and during a rebuild
// at the default rate, for their p50 and p99 latency. The limit-factor is
// the share of the disk's bandwidth the figure can use when every member
// shares one disk: a rebuilt chunk costs one write and Members-1 reads, a
// scrubbed stripe Members reads for Data chunks of data. Run it with
// -benchtime 1x: each sub-benchmark does its whole job once.
func BenchmarkBackground(b *testing.B) {
	root := b.TempDir()
	raw, err := blockdev.CreateFile(filepath.Join(root, "raw"), backgroundSize, true)
	if err != nil {
		b.Fatal(err)
	}
	defer raw.Close()
	fillAll(b, raw, backgroundSize)
	var dirs []string
	for i := range 6 {
		dirs = append(dirs, filepath.Join(root, fmt.Sprint("m", i)))
	}
	if _, err := raid.Create(dirs, raid.Config{Layout: "raid6", Size: backgroundSize}); err != nil {
		b.Fatal(err)
	}
	v, err := raid.Open(dirs, raid.Options{Direct: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer v.Close()
	fillAll(b, v, backgroundSize)
	l := v.Layout()
	memberBytes := backgroundSize / int64(l.Data)
	replaced := 0
	replace := func(b *testing.B) {
		replaced++
		if err := v.Replace(replaced%l.Members, filepath.Join(root, fmt.Sprint("new", replaced))); err != nil {
			b.Fatal(err)
		}
	}
	for range 3 {
		b.Run("rebuild/raw", func(b *testing.B) {
			b.SetBytes(backgroundSize)
			sequentialAll(b, raw, backgroundSize, true)
		})
		b.Run("rebuild/raid6-6", func(b *testing.B) {
			b.StopTimer()
			replace(b)
			b.SetBytes(memberBytes)
			b.ReportMetric(1/float64(l.Members), "limit-factor")
			b.StartTimer()
			for {
				_, more, err := v.RebuildStep()
				if err != nil {
					b.Fatal(err)
				}
				if !more {
					break
				}
			}
		})
		b.Run("scrub/raw", func(b *testing.B) {
			b.SetBytes(backgroundSize)
			sequentialAll(b, raw, backgroundSize, false)
		})
		b.Run("scrub/raid6-6", func(b *testing.B) {
			b.SetBytes(backgroundSize)
			b.ReportMetric(float64(l.Data)/float64(l.Members), "limit-factor")
			rs := v.RegionStripes()
			for s := int64(0); s < v.Stripes(); s += rs {
				if _, err := v.Scrub(s, s+rs, true); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("randread-4K-latency/healthy", func(b *testing.B) { latencies(b, v) })
		b.Run("randread-4K-latency/rebuild-default-rate", func(b *testing.B) {
			b.StopTimer()
			replace(b)
			r, err := scrub.Start(v, scrub.DefaultRate, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer r.Stop()
			b.StartTimer()
			latencies(b, v)
			if len(v.Rebuilds()) == 0 {
				b.Fatal("the rebuild ended before the reads did: the figure is not taken during a rebuild")
			}
		})
		// Finish the rebuild left under way, unthrottled.
		for len(v.Rebuilds()) > 0 {
			if _, _, err := v.RebuildStep(); err != nil {
				b.Fatal(err)
			}
		}
	}
}

type readerWriter interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
}

func fillAll(b *testing.B, t readerWriter, size int64) {
	p := blockdev.AllocAligned(1 << 20)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	for off := int64(0); off < size; off += int64(len(p)) {
		if _, err := t.WriteAt(p, off); err != nil {
			b.Fatal(err)
		}
	}
}

// sequentialAll reads or writes the whole of t once, 1 MiB at a time at
// queue depth 16.
func sequentialAll(b *testing.B, t readerWriter, size int64, write bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			p := blockdev.AllocAligned(1 << 20)
			for {
				off := (next.Add(1) - 1) << 20
				if off >= size {
					return
				}
				var err error
				if write {
					_, err = t.WriteAt(p, off)
				} else {
					_, err = t.ReadAt(p, off)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// latencies times 3000 random 4 KiB reads at queue depth 4 and reports
// their p50 and p99 in milliseconds.
func latencies(b *testing.B, v *raid.Volume) {
	const reads, depth = 3000, 4
	var mu sync.Mutex
	var took []time.Duration
	var wg sync.WaitGroup
	for g := range depth {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			p := blockdev.AllocAligned(4096)
			mine := make([]time.Duration, 0, reads/depth)
			for range reads / depth {
				off := rng.Int64N(backgroundSize/4096) * 4096
				start := time.Now()
				if _, err := v.ReadAt(p, off); err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, time.Since(start))
			}
			mu.Lock()
			took = append(took, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(took)
	ms := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}
