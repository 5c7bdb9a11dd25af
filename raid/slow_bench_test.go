package raid_test

import (
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// BenchmarkSlowMember measures 4 KiB random read latency (queue depth 1,
// O_DIRECT members) with every member healthy and with one member taking
// 500 ms per read, for a mirror and a parity layout. It reports the median
// and the 99th percentile; `make bench` prints the slowed figures beside the
// healthy ones. Hedging and sitting out are what keep the median down.
func BenchmarkSlowMember(b *testing.B) {
	for _, g := range []struct {
		layout  string
		members int
	}{{"raid1", 2}, {"raid6", 6}} {
		for _, slowed := range []bool{false, true} {
			name := g.layout + "/healthy"
			if slowed {
				name = g.layout + "/slowed"
			}
			b.Run(name, func(b *testing.B) {
				const size = 64 << 20
				c := raid.Config{Layout: g.layout, Size: size}
				a := raidtest.New(b, c, g.members, raid.Options{Direct: true, Logger: slog.New(slog.DiscardHandler)})
				p := blockdev.AllocAligned(1 << 20)
				for off := int64(0); off < size; off += int64(len(p)) {
					if _, err := a.Vol.WriteAt(p, off); err != nil {
						b.Fatal(err)
					}
				}
				if slowed {
					a.Fault(0).Add(blockdev.Rule{Kind: blockdev.FaultDelay, Ops: blockdev.OpRead, Delay: 500 * time.Millisecond})
				}
				rng := rand.New(rand.NewPCG(1, 2))
				buf := blockdev.AllocAligned(4096)
				lat := make([]time.Duration, 0, b.N)
				b.SetBytes(4096)
				b.ResetTimer()
				for range b.N {
					start := time.Now()
					if _, err := a.Vol.ReadAt(buf, rng.Int64N(size/4096)*4096); err != nil {
						b.Fatal(err)
					}
					lat = append(lat, time.Since(start))
				}
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2])/1e6, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100])/1e6, "p99-ms")
			})
		}
	}
}
