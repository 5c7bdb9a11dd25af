package cli

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
)

type benchFlags struct {
	dir, layout, size, chunk string
	members, depth           int
	duration                 time.Duration
	direct, asJSON, keep     bool
}

func newBench() *cobra.Command {
	var f benchFlags
	cmd := &cobra.Command{
		Use:   "bench [--layout L] [--members N] [--size S] [--dir DIR] [options]",
		Short: "Measure a scratch array against plain file I/O on the same file system",
		Long: `Create a scratch array and a plain file of the same size side by side in a
new folder under --dir, run the same workloads on both (sequential 1 MiB
writes and reads, random 4 KiB reads and writes, at the given queue depth)
and print each figure beside the plain file's. Every byte read back is
checked against what was written; any difference fails the command. The
folder is removed afterwards unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := f.config()
			if err != nil {
				return err
			}
			rep, err := runBench(f, cfg)
			if err != nil {
				return err
			}
			if f.asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				rep.print(cmd.OutOrStdout())
			}
			if rep.Wrong > 0 {
				return fmt.Errorf("%d block(s) read back differently from what was written", rep.Wrong)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", os.TempDir(), "where to make the scratch folder (on the file system to measure)")
	fl.StringVar(&f.layout, "layout", "raid6", "layout of the scratch array")
	fl.IntVar(&f.members, "members", 6, "number of members")
	fl.StringVar(&f.size, "size", "1GiB", "volume size")
	fl.StringVar(&f.chunk, "chunk", "64KiB", "chunk size")
	fl.IntVar(&f.depth, "depth", 16, "requests in flight (queue depth)")
	fl.DurationVar(&f.duration, "duration", 3*time.Second, "how long each random workload runs")
	fl.BoolVar(&f.direct, "direct", true, "use O_DIRECT for the members and the plain file")
	fl.BoolVar(&f.asJSON, "json", false, "print the report as JSON")
	fl.BoolVar(&f.keep, "keep", false, "keep the scratch folder")
	return cmd
}

// config validates the flags; it touches nothing.
func (f benchFlags) config() (raid.Config, error) {
	if _, err := raid.ParseLayout(f.layout, f.members); err != nil {
		return raid.Config{}, fmt.Errorf("--layout/--members: %w", err)
	}
	size, err := raid.ParseSize(f.size)
	if err != nil {
		return raid.Config{}, fmt.Errorf("--size: %w", err)
	}
	if size < 1<<20 || size%(1<<20) != 0 {
		return raid.Config{}, fmt.Errorf("--size: %s: give a whole number of MiB, at least 1MiB", f.size)
	}
	chunk, err := raid.ParseSize(f.chunk)
	if err != nil {
		return raid.Config{}, fmt.Errorf("--chunk: %w", err)
	}
	if f.depth < 1 || f.depth > 1024 {
		return raid.Config{}, fmt.Errorf("--depth %d: give 1 to 1024", f.depth)
	}
	if f.duration <= 0 {
		return raid.Config{}, fmt.Errorf("--duration %s: give a positive duration", f.duration)
	}
	if st, err := os.Stat(f.dir); err != nil || !st.IsDir() {
		return raid.Config{}, fmt.Errorf("--dir %s is not a directory", f.dir)
	}
	return raid.Config{Layout: f.layout, Size: size, Chunk: chunk, Name: "bench"}, nil
}

// benchFigure is one workload measured on the plain file and the volume.
type benchFigure struct {
	Workload string  `json:"workload"`
	Unit     string  `json:"unit"`
	Raw      float64 `json:"raw"`
	Volume   float64 `json:"volume"`
	Ratio    float64 `json:"ratio"`
	// Limit is the ratio the layout can reach at best (K/(K+M) or 1/N for
	// writes), where it is below 1.
	Limit float64 `json:"limit,omitempty"`
}

type benchReport struct {
	Layout   string        `json:"layout"`
	Size     int64         `json:"size"`
	Chunk    int64         `json:"chunk"`
	Depth    int           `json:"depth"`
	Direct   bool          `json:"direct"`
	Folder   string        `json:"folder"`
	Figures  []benchFigure `json:"figures"`
	Verified int64         `json:"verified_bytes"`
	Wrong    int64         `json:"wrong_blocks"`
}

func (r *benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "%s, %s, chunk %s, queue depth %d, O_DIRECT %v, in %s\n\n",
		r.Layout, raid.FormatSize(r.Size), raid.FormatSize(r.Chunk), r.Depth, r.Direct, r.Folder)
	fmt.Fprintf(w, "%-18s %12s %12s %7s\n", "workload", "plain file", "volume", "ratio")
	for _, f := range r.Figures {
		limit := ""
		if f.Limit > 0 {
			limit = fmt.Sprintf("  (layout limit %.2f)", f.Limit)
		}
		fmt.Fprintf(w, "%-18s %8.0f %-4s%8.0f %-4s%6.2f%s\n", f.Workload, f.Raw, f.Unit, f.Volume, f.Unit, f.Ratio, limit)
	}
	fmt.Fprintf(w, "\nverified %s read back, %d block(s) wrong\n", raid.FormatSize(r.Verified), r.Wrong)
}

// target is what the workloads drive, with the model of what it holds: the
// version last written to each block.
type target struct {
	rw interface {
		io.ReaderAt
		io.WriterAt
	}
	size     int64
	versions []uint32
	verified atomic.Int64
	wrong    atomic.Int64
}

func runBench(f benchFlags, cfg raid.Config) (*benchReport, error) {
	root, err := os.MkdirTemp(f.dir, "lockstep-bench-")
	if err != nil {
		return nil, err
	}
	if !f.keep {
		defer os.RemoveAll(root)
	}
	var dirs []string
	for i := range f.members {
		dirs = append(dirs, filepath.Join(root, fmt.Sprint("disk", i)))
	}
	if _, err := raid.Create(dirs, cfg); err != nil {
		return nil, err
	}
	vol, err := raid.Open(dirs, raid.Options{Direct: f.direct})
	if err != nil {
		return nil, err
	}
	defer vol.Close()
	raw, err := blockdev.CreateFile(filepath.Join(root, "plain"), cfg.Size, f.direct)
	if err != nil {
		return nil, err
	}
	defer raw.Close()
	l := vol.Layout()
	rep := &benchReport{Layout: l.String(), Size: cfg.Size, Chunk: vol.Chunk(), Depth: f.depth, Direct: f.direct, Folder: root}
	targets := []*target{
		{rw: raw, size: cfg.Size, versions: make([]uint32, cfg.Size/blockdev.BlockSize)},
		{rw: vol, size: cfg.Size, versions: make([]uint32, cfg.Size/blockdev.BlockSize)},
	}
	writeLimit := float64(l.Data) / float64(l.Members)
	for _, w := range []struct {
		name, unit string
		limit      float64
		run        func(t *target) (float64, error)
	}{
		{"seq write 1MiB", "MB/s", writeLimit, func(t *target) (float64, error) { return t.sequential(f.depth, true) }},
		{"seq read 1MiB", "MB/s", 0, func(t *target) (float64, error) { return t.sequential(f.depth, false) }},
		{"rand write 4KiB", "IOPS", 0, func(t *target) (float64, error) { return t.random(f.depth, f.duration, true) }},
		{"rand read 4KiB", "IOPS", 0, func(t *target) (float64, error) { return t.random(f.depth, f.duration, false) }},
	} {
		fig := benchFigure{Workload: w.name, Unit: w.unit}
		if w.limit < 1 {
			fig.Limit = w.limit
		}
		if fig.Raw, err = w.run(targets[0]); err != nil {
			return nil, fmt.Errorf("%s on the plain file: %w", w.name, err)
		}
		if fig.Volume, err = w.run(targets[1]); err != nil {
			return nil, fmt.Errorf("%s on the volume: %w", w.name, err)
		}
		fig.Ratio = fig.Volume / fig.Raw
		rep.Figures = append(rep.Figures, fig)
	}
	rep.Verified, rep.Wrong = targets[1].verified.Load(), targets[1].wrong.Load()
	if n := targets[0].wrong.Load(); n > 0 {
		return nil, fmt.Errorf("the plain file itself read back %d wrong block(s): the file system is not trustworthy", n)
	}
	return rep, nil
}

// template is the body of every block the benchmark writes; each block
// carries its number and version at both ends, so a misplaced, stale or
// damaged block reads back different.
var template = func() []byte {
	t := make([]byte, blockdev.BlockSize)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range t {
		t[i] = byte(r.Uint32())
	}
	return t
}()

// pattern fills p, which starts at block blk, with the current version of
// each of its blocks.
func pattern(p []byte, blk int64, versions []uint32) {
	for b := 0; b < len(p); b += blockdev.BlockSize {
		k := blk + int64(b/blockdev.BlockSize)
		blockp := p[b : b+blockdev.BlockSize]
		copy(blockp, template)
		binary.LittleEndian.PutUint64(blockp[0:], uint64(k))
		binary.LittleEndian.PutUint32(blockp[8:], versions[k])
		copy(blockp[blockdev.BlockSize-12:], blockp[:12])
	}
}

// check compares p, read at block blk, with the model, block by block.
func (t *target) check(p, scratch []byte, blk int64) {
	pattern(scratch, blk, t.versions)
	for b := 0; b < len(p); b += blockdev.BlockSize {
		if !bytes.Equal(p[b:b+blockdev.BlockSize], scratch[b:b+blockdev.BlockSize]) {
			t.wrong.Add(1)
		}
	}
	t.verified.Add(int64(len(p)))
}

// sequential writes (version 1) or reads and checks the whole target once in
// 1 MiB requests, depth at a time, and returns MB/s.
func (t *target) sequential(depth int, write bool) (float64, error) {
	const n = 1 << 20
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for range depth {
		wg.Go(func() {
			p, scratch := blockdev.AllocAligned(n), blockdev.AllocAligned(n)
			for {
				off := (next.Add(1) - 1) * n
				if off >= t.size {
					return
				}
				blk := off / blockdev.BlockSize
				var err error
				if write {
					for b := blk; b < blk+n/blockdev.BlockSize; b++ {
						t.versions[b] = 1
					}
					pattern(p, blk, t.versions)
					_, err = t.rw.WriteAt(p, off)
				} else if _, err = t.rw.ReadAt(p, off); err == nil {
					t.check(p, scratch, blk)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(t.size) / time.Since(start).Seconds() / 1e6, firstErr
}

// random writes (a new version of each block; worker w owns the blocks
// equal to w modulo depth, so versions never race) or reads and checks
// random blocks for the duration, and returns IOPS.
func (t *target) random(depth int, d time.Duration, write bool) (float64, error) {
	const n = blockdev.BlockSize
	blocks := t.size / n
	var ops atomic.Int64
	var errs = make([]error, depth)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range depth {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			p, scratch := blockdev.AllocAligned(n), blockdev.AllocAligned(n)
			for time.Since(start) < d {
				blk := rng.Int64N(blocks)
				if write {
					blk = blk / int64(depth) * int64(depth)
					if blk += int64(w); blk >= blocks {
						continue
					}
					t.versions[blk]++
					pattern(p, blk, t.versions)
					_, errs[w] = t.rw.WriteAt(p, blk*n)
				} else if _, errs[w] = t.rw.ReadAt(p, blk*n); errs[w] == nil {
					t.check(p, scratch, blk)
				}
				if errs[w] != nil {
					return
				}
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(ops.Load()) / time.Since(start).Seconds(), errors.Join(errs...)
}
