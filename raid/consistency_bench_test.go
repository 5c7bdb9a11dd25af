package raid_test

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
)

// consistencyArray creates a raid6 array over O_DIRECT members and returns
// its directories and a function that opens it with a policy.
func consistencyArray(b *testing.B, size int64) ([]string, func(raid.Consistency) *raid.Volume) {
	root := b.TempDir()
	var dirs []string
	for i := range 6 {
		dirs = append(dirs, filepath.Join(root, fmt.Sprint("m", i)))
	}
	if _, err := raid.Create(dirs, raid.Config{Layout: "raid6", Size: size}); err != nil {
		b.Fatal(err)
	}
	return dirs, func(c raid.Consistency) *raid.Volume {
		v, err := raid.Open(dirs, raid.Options{Direct: true, Consistency: c, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		return v
	}
}

// BenchmarkConsistency measures what the write-intent log costs: raid6
// writes at queue depth 16 with a flush after every 64 MiB written (a
// file system's commit interval, roughly), with no log (the resync policy,
// the baseline, named "none"), with the bitmap and with the journal. The workloads go round
// the policies benchRounds times, as in BenchmarkIO.
func BenchmarkConsistency(b *testing.B) {
	_, open := consistencyArray(b, benchSize)
	for _, w := range []struct {
		name string
		bs   int64
		seq  bool
	}{{"seqwrite-1M", 1 << 20, true}, {"randwrite-4K", 4 << 10, false}} {
		for round := range benchRounds {
			policies := []raid.Consistency{raid.ConsistencyResync, raid.ConsistencyBitmap, raid.ConsistencyJournal}
			for k := range policies {
				policy := policies[(k+round)%len(policies)]
				name := map[raid.Consistency]string{raid.ConsistencyResync: "none", raid.ConsistencyBitmap: "bitmap", raid.ConsistencyJournal: "journal"}[policy]
				b.Run(w.name+"/"+name, func(b *testing.B) {
					v := open(policy)
					defer v.Close()
					flushEvery := (64 << 20) / w.bs
					var next, written atomic.Int64
					b.SetBytes(w.bs)
					b.SetParallelism(parallelism())
					b.RunParallel(func(pb *testing.PB) {
						p := blockdev.AllocAligned(int(w.bs))
						rng := rand.New(rand.NewPCG(uint64(next.Add(1)), 7))
						for pb.Next() {
							off := next.Add(1) * w.bs % benchSize
							if !w.seq {
								off = rng.Int64N(benchSize/w.bs) * w.bs
							}
							if _, err := v.WriteAt(p, off); err != nil {
								b.Error(err)
								return
							}
							if written.Add(1)%flushEvery == 0 {
								if err := v.Flush(); err != nil {
									b.Error(err)
									return
								}
							}
						}
					})
				})
			}
		}
	}
}

// BenchmarkRecovery times opening a 2 GiB raid6 volume after a crash in the
// middle of random writes: the journal replays its entries and resyncs the
// regions marked, the bitmap resyncs those regions, the resync policy the
// whole volume.
func BenchmarkRecovery(b *testing.B) {
	const size = 2 << 30
	_, open := consistencyArray(b, size)
	v := open(raid.ConsistencyBitmap)
	fill(b, v, size)
	if err := v.Close(); err != nil {
		b.Fatal(err)
	}
	// "clean" is the baseline: an open after a clean close.
	for _, policy := range []raid.Consistency{"clean", raid.ConsistencyJournal, raid.ConsistencyBitmap, raid.ConsistencyResync} {
		b.Run(string(policy), func(b *testing.B) {
			var took time.Duration
			for range b.N {
				if policy == "clean" {
					start := time.Now()
					v := open(raid.ConsistencyBitmap)
					took += time.Since(start)
					v.Close()
					continue
				}
				v := open(policy)
				// Writes scattered over a quarter of the volume, not flushed.
				rng := rand.New(rand.NewPCG(1, 2))
				p := blockdev.AllocAligned(64 << 10)
				for range 256 {
					if _, err := v.WriteAt(p, rng.Int64N(size/4/int64(len(p)))*int64(len(p))); err != nil {
						b.Fatal(err)
					}
				}
				v.Crash()
				start := time.Now()
				v = open(policy)
				took += time.Since(start)
				v.Close()
			}
			b.ReportMetric(took.Seconds()/float64(b.N), "recovery-s")
			b.ReportMetric(0, "ns/op")
		})
	}
}
