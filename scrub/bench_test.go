package scrub_test

import (
	"errors"
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
const backgroundSize = 1 << 30

// BenchmarkBackground measures, in five rounds that interleave each figure
// with its baseline (the disk's speed wanders: take the medians), through
// the Runner as a mount runs it:
//   - unthrottled rebuilds of one raid6 member, in bytes written to it per
//     second from the rebuild's start (once the new member is in place)
//     until it is online, synced: of a failed member (every chunk
//     reconstructed from Data others), beside the same job done on plain
//     files (Data files read and one new file written, 1 MiB at a time,
//     then synced); and of a healthy member replaced (every chunk copied
//     from it), beside a plain file copied to a new one, then synced;
//   - an unthrottled check scrub (volume bytes checked per second) beside
//     sequential reads of a plain file: Members reads for Data chunks;
//   - 4 KiB random reads at queue depth 4 for four seconds, for their p50
//     and p99 latency: healthy; degraded-idle (a member fenced, no spare,
//     nothing in the background); during the rebuild of that member at the
//     default rate; and during the replacement of a healthy member at the
//     default rate. Each rebuild starts once the reads are under way, as on
//     a mount in use. Their floor is the same reads of six plain files
//     (randread-4K-latency-plain), healthy and degraded-idle: there a read
//     of the first file is four reads of others at once, as a degraded
//     raid6 small read is.
//
// The plain-file baselines do the reads and writes a rebuild cannot do
// without, made durable as a rebuild's are: on one shared disk that is the
// limit. (Writes not yet synced are cheaper than that here, since the
// virtual disk caches them: the sync at the end pays for them.) The scrub's
// limit-factor is the share of the read bandwidth it can use when every
// member shares one disk. Run it with -benchtime 1x: each sub-benchmark
// does its whole job once.
func BenchmarkBackground(b *testing.B) {
	root := b.TempDir()
	// The read baseline's file and the plain rebuild's sources, written
	// once beside the volume's data, so that the data they read has the
	// same history as the data the volume reads.
	rawRead, err := blockdev.CreateFile(filepath.Join(root, "raw-read"), backgroundSize, true)
	if err != nil {
		b.Fatal(err)
	}
	defer rawRead.Close()
	fillAll(b, rawRead, backgroundSize)
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
	// memberFile makes a plain file of a member's size, filled.
	memberFile := func(name string) *blockdev.File {
		f, err := blockdev.CreateFile(filepath.Join(root, name), memberBytes, true)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		fillAll(b, f, memberBytes)
		return f
	}
	var sources []*blockdev.File
	for i := range l.Data {
		sources = append(sources, memberFile(fmt.Sprint("source", i)))
	}
	// Six plain files, for the latency figures' floor: the sources and two
	// more.
	plainFiles := slices.Clone(sources)
	for i := range l.Members - l.Data {
		plainFiles = append(plainFiles, memberFile(fmt.Sprint("plain", i)))
	}
	copies := 0
	// plain does a rebuild's reads and writes on plain files: from each of
	// from into a new file, then syncs it.
	plain := func(b *testing.B, from []*blockdev.File) {
		b.StopTimer()
		b.SetBytes(memberBytes)
		copies++
		to, err := blockdev.CreateFile(filepath.Join(root, fmt.Sprint("copy", copies)), memberBytes, true)
		if err != nil {
			b.Fatal(err)
		}
		defer to.Close()
		b.StartTimer()
		plainRebuild(b, from, to, memberBytes)
	}
	replaced := 0
	replace := func(b *testing.B) {
		replaced++
		if err := v.Replace(replaced%l.Members, filepath.Join(root, fmt.Sprint("new", replaced))); err != nil {
			b.Fatal(err)
		}
	}
	// The slot the next replace takes, fenced: degraded, nothing rebuilt.
	fence := func(b *testing.B) {
		if err := v.Fail((replaced + 1) % l.Members); err != nil {
			b.Fatal(err)
		}
	}
	for range 5 {
		// Setting up the new member (formatting it, syncs) takes the same
		// time whatever its size: only the rebuild is timed, from when the
		// runner that does it starts.
		rebuild := func(b *testing.B) {
			b.StopTimer()
			b.SetBytes(memberBytes)
			replace(b)
			b.StartTimer()
			r := startRunner(b, v, scrub.Rate{})
			defer r.Stop()
			waitUntil(b, func() bool { return len(v.Rebuilds()) == 0 })
		}
		b.Run("rebuild/raw", func(b *testing.B) { plain(b, sources) })
		b.Run("rebuild/raid6-6", func(b *testing.B) {
			// A failed member's: every chunk reconstructed.
			fence(b)
			rebuild(b)
		})
		b.Run("replace/raw", func(b *testing.B) { plain(b, sources[:1]) })
		b.Run("replace/raid6-6", func(b *testing.B) {
			// A healthy member's, replaced: every chunk copied from it.
			rebuild(b)
		})
		b.Run("scrub/raw", func(b *testing.B) {
			b.SetBytes(backgroundSize)
			sequentialAll(b, rawRead, backgroundSize)
		})
		b.Run("scrub/raid6-6", func(b *testing.B) {
			b.StopTimer()
			b.SetBytes(backgroundSize)
			b.ReportMetric(float64(l.Data)/float64(l.Members), "limit-factor")
			r := startRunner(b, v, scrub.Rate{})
			defer r.Stop()
			b.StartTimer()
			if _, err := r.StartScrub(true); err != nil {
				b.Fatal(err)
			}
			waitUntil(b, func() bool { s, _, _ := r.ScrubStatus(); return s.State == scrub.Finished })
			if s, _, _ := r.ScrubStatus(); s.Done != backgroundSize || s.Bad[0]+s.Bad[1]+s.Bad[2]+s.Bad[3]+s.Bad[4]+s.Bad[5] != 0 {
				b.Fatalf("scrub: %+v", s)
			}
		})
		b.Run("randread-4K-latency-plain/healthy", func(b *testing.B) { timeReads(b, plainRead(plainFiles, false), func() {}) })
		b.Run("randread-4K-latency-plain/degraded-idle", func(b *testing.B) { timeReads(b, plainRead(plainFiles, true), func() {}) })
		b.Run("randread-4K-latency/healthy", func(b *testing.B) { latencies(b, v, func() {}) })
		b.Run("randread-4K-latency/degraded-idle", func(b *testing.B) { latencies(b, v, func() { fence(b) }) })
		// during times reads while a rebuild runs at the default rate.
		during := func(b *testing.B) {
			r := startRunner(b, v, scrub.DefaultRate)
			defer r.Stop()
			var before int64
			latencies(b, v, func() {
				// Once the readers are busy, as on a mount in use; the
				// reads timed start after it.
				replace(b)
				before = v.Rebuilds()[0].Done
			})
			st := v.Rebuilds()
			if len(st) == 0 {
				b.Fatal("the rebuild ended before the reads did: the figure is not taken during a rebuild")
			}
			if st[0].Done == before {
				b.Fatal("the rebuild made no progress during the reads")
			}
			b.ReportMetric(float64(st[0].Done-before)/(1<<20)/latencyRun.Seconds(), "rebuild-MiB/s")
		}
		// finish completes the rebuild left under way, unthrottled.
		finish := func(b *testing.B) {
			for len(v.Rebuilds()) > 0 {
				if _, _, err := v.RebuildStep(0); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.Run("randread-4K-latency/rebuild-default-rate", func(b *testing.B) {
			// The member fenced just before: reconstructed.
			during(b)
		})
		finish(b)
		b.Run("randread-4K-latency/replace-default-rate", func(b *testing.B) {
			// A healthy member replaced: it serves reads until the
			// rebuild is done.
			during(b)
		})
		finish(b)
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

// sequentialAll reads the whole of t once, 1 MiB at a time at queue depth
// 16.
func sequentialAll(b *testing.B, t readerWriter, size int64) {
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
				if _, err := t.ReadAt(p, off); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// plainRebuild writes size bytes of to from the same bytes of each of
// from, 1 MiB at a time, raid.RegionsInFlight of them at once as a rebuild
// does, reading all of from at once for each; then it syncs to.
func plainRebuild(b *testing.B, from []*blockdev.File, to *blockdev.File, size int64) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range raid.RegionsInFlight {
		wg.Go(func() {
			bufs := make([][]byte, len(from))
			for i := range bufs {
				bufs[i] = blockdev.AllocAligned(1 << 20)
			}
			for {
				off := (next.Add(1) - 1) << 20
				if off >= size {
					return
				}
				var reads sync.WaitGroup
				for i, f := range from {
					reads.Go(func() {
						if _, err := f.ReadAt(bufs[i], off); err != nil {
							b.Error(err)
						}
					})
				}
				reads.Wait()
				if _, err := to.WriteAt(bufs[0], off); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := to.Sync(); err != nil {
		b.Fatal(err)
	}
}

// startRunner starts a runner on v at the given rate.
func startRunner(b *testing.B, v *raid.Volume, rate scrub.Rate) *scrub.Runner {
	r, err := scrub.Start(v, rate, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// waitUntil polls cond, which a background runner will make true.
func waitUntil(b *testing.B, cond func() bool) {
	for deadline := time.Now().Add(10 * time.Minute); !cond(); {
		if time.Now().After(deadline) {
			b.Fatal("the background job did not end within 10 minutes")
		}
		time.Sleep(time.Millisecond) // polling a runner's progress
	}
}

// latencyRun is how long the latency figures read for.
const latencyRun = 4 * time.Second

// latencies runs random 4 KiB reads at queue depth 4, calls during once
// they are under way, then times those that start within latencyRun after
// it returns, and reports their p50 and p99 in milliseconds.
func latencies(b *testing.B, v *raid.Volume, during func()) {
	timeReads(b, func(p []byte, off int64) error { _, err := v.ReadAt(p, off); return err }, during)
}

// timeReads is latencies over any read of backgroundSize bytes.
func timeReads(b *testing.B, read func(p []byte, off int64) error, during func()) {
	const depth = 4
	var mu sync.Mutex
	var took []time.Duration
	var wg sync.WaitGroup
	var from, end atomic.Int64 // unix nanoseconds; 0 until during has returned
	end.Store(time.Now().Add(time.Hour).UnixNano())
	var started sync.WaitGroup
	started.Add(depth)
	for g := range depth {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			p := blockdev.AllocAligned(4096)
			var mine []time.Duration
			started.Done()
			for time.Now().UnixNano() < end.Load() {
				off := rng.Int64N(backgroundSize/4096) * 4096
				start := time.Now()
				if err := read(p, off); err != nil {
					b.Error(err)
					return
				}
				if f := from.Load(); f != 0 && start.UnixNano() >= f {
					mine = append(mine, time.Since(start))
				}
			}
			mu.Lock()
			took = append(took, mine...)
			mu.Unlock()
		})
	}
	started.Wait()
	time.Sleep(100 * time.Millisecond) // let the readers get going, as users of a mount would be
	during()
	now := time.Now()
	end.Store(now.Add(latencyRun).UnixNano())
	from.Store(now.UnixNano())
	wg.Wait()
	slices.Sort(took)
	ms := func(q float64) float64 { return float64(took[int(q*float64(len(took)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.50), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

// plainRead reads 4 KiB blocks of backgroundSize bytes laid across files
// one by one, as a volume lays its chunks across members. With degraded,
// a block of the first file is read instead from four others at once
// (all but the first and the last), as a degraded raid6 read reconstructs
// a small read from the other data chunks and the first parity: the floor
// of what lockstep's degraded reads cost on this disk.
func plainRead(files []*blockdev.File, degraded bool) func(p []byte, off int64) error {
	n := int64(len(files))
	// Pooled, as the volume pools its own: an allocation per read would
	// make the floor slower than what it bounds.
	bufs := sync.Pool{New: func() any { b := blockdev.AllocAligned(4096); return &b }}
	return func(p []byte, off int64) error {
		blk := off / int64(len(p))
		f, at := blk%n, blk/n*int64(len(p))
		if !degraded || f != 0 {
			_, err := files[f].ReadAt(p, at)
			return err
		}
		others := files[1 : n-1]
		errs := make(chan error, len(others))
		for _, other := range others {
			go func() {
				buf := bufs.Get().(*[]byte)
				_, err := other.ReadAt((*buf)[:len(p)], at)
				bufs.Put(buf)
				errs <- err
			}()
		}
		var err error
		for range others {
			err = errors.Join(err, <-errs)
		}
		return err
	}
}
