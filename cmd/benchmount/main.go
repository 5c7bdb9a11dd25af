// Command benchmount measures the mount, for make bench: fio through a
// lockstep mount, beside fio through a FUSE passthrough of one plain file
// (the floor of any FUSE design), fio on that plain file with no FUSE at
// all, and the same workloads driven against the engine in-process (no
// FUSE). Every target runs each workload once per round, in an order that
// rotates from round to round; the report gives medians and ratios.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/fuse"
	"github.com/lockstepfs/lockstep/raid"
)

// workload is one fio job shape.
type workload struct {
	name  string
	write bool
	args  []string
	// timed workloads run for the runtime; others transfer the whole file.
	timed bool
}

var workloads = []workload{
	{"seq write 1MiB", true, []string{"--rw=write", "--bs=1M", "--direct=1", "--ioengine=libaio", "--iodepth=16"}, true},
	{"seq read 1MiB", false, []string{"--rw=read", "--bs=1M", "--direct=1", "--ioengine=libaio", "--iodepth=16"}, true},
	{"rand read 4KiB", false, []string{"--rw=randread", "--bs=4k", "--direct=1", "--ioengine=libaio", "--iodepth=16"}, true},
	{"rand write 4KiB", true, []string{"--rw=randwrite", "--bs=4k", "--direct=1", "--ioengine=libaio", "--iodepth=16"}, true},
	// Buffered writes and one fsync at the end: what the writeback cache
	// changes.
	{"buffered write+fsync", true, []string{"--rw=write", "--bs=1M", "--direct=0", "--ioengine=psync", "--end_fsync=1"}, false},
}

// result is one measurement.
type result struct {
	bps      float64 // bytes per second
	iops     float64
	p50, p99 float64 // completion latency, milliseconds
}

// logger receives the engine's and the mounts' logs: nothing, unless -v.
var logger = slog.New(slog.NewTextHandler(io.Discard, nil))

// target is something a workload runs on.
type target struct {
	name string
	run  func(w workload) (result, error)
}

func main() {
	dir := flag.String("dir", os.TempDir(), "where to put the files and members (the file system to measure)")
	sizeFlag := flag.String("size", "1GiB", "size of the plain file and the volume")
	layout := flag.String("layout", "raid6", "layout of the array")
	members := flag.Int("members", 6, "members of the array")
	rounds := flag.Int("rounds", 3, "rounds; medians are reported")
	runtime := flag.Duration("runtime", 3*time.Second, "how long each timed workload runs")
	verbose := flag.Bool("v", false, "log the engine's warnings to standard error")
	flag.Parse()
	raid.UseProcs() // as lockstep mount does; the floor's server runs here too
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if err := run(*dir, *sizeFlag, *layout, *members, *rounds, *runtime); err != nil {
		fmt.Fprintln(os.Stderr, "benchmount:", err)
		os.Exit(1)
	}
}

func run(dir, sizeFlag, layout string, members, rounds int, runtime time.Duration) error {
	if _, err := exec.LookPath("fio"); err != nil {
		return fmt.Errorf("needs fio (apt-get install fio)")
	}
	size, err := raid.ParseSize(sizeFlag)
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp(dir, "benchmount")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	quiet := logger

	// The plain file, with and without FUSE.
	plain := filepath.Join(root, "plain")
	if _, err := blockdev.CreateFile(plain, size, false); err != nil {
		return err
	}
	floorFile, err := fuse.OpenFile(plain, true)
	if err != nil {
		return err
	}
	defer floorFile.Close()
	floorMnt, err := mountAt(root, "floor", floorFile, fuse.Options{Logger: quiet})
	if err != nil {
		return err
	}
	defer unmount(floorMnt)

	// The array, mounted twice: with the kernel's writeback cache and
	// without.
	var dirs []string
	for i := range members {
		dirs = append(dirs, filepath.Join(root, fmt.Sprintf("m%d", i)))
	}
	if _, err := raid.Create(dirs, raid.Config{Layout: layout, Size: size, Name: "bench"}); err != nil {
		return err
	}
	vol, err := raid.Open(dirs, raid.Options{Direct: true, Logger: quiet})
	if err != nil {
		return err
	}
	defer vol.Close()
	volMnt, err := mountAt(root, "lockstep", vol, fuse.Options{Logger: quiet})
	if err != nil {
		return err
	}
	defer unmount(volMnt)
	wbMnt, err := mountAt(root, "lockstep-wb", vol, fuse.Options{Logger: quiet, WritebackCache: true})
	if err != nil {
		return err
	}
	defer unmount(wbMnt)

	fioOn := func(path string) func(workload) (result, error) {
		return func(w workload) (result, error) { return runFio(path, size, runtime, w) }
	}
	targets := []target{
		{"raw file", fioOn(plain)},
		{"FUSE floor", fioOn(filepath.Join(floorMnt.Dir(), "volume"))},
		{"lockstep mount", fioOn(filepath.Join(volMnt.Dir(), "volume"))},
		{"mount+writeback", fioOn(filepath.Join(wbMnt.Dir(), "volume"))},
		{"engine, no FUSE", func(w workload) (result, error) { return runEngine(vol, size, runtime, w) }},
	}
	// Fill both, so that reads find data rather than holes.
	for _, t := range targets[:3:3] {
		if t.name == "FUSE floor" {
			continue
		}
		if _, err := t.run(workload{"fill", true, []string{"--rw=write", "--bs=1M", "--direct=1", "--ioengine=libaio", "--iodepth=16"}, false}); err != nil {
			return fmt.Errorf("fill %s: %w", t.name, err)
		}
	}
	l, err := raid.ParseLayout(layout, members)
	if err != nil {
		return err
	}
	res := map[string]map[string][]result{}
	for r := range rounds {
		for _, w := range workloads {
			for i := range targets {
				t := targets[(i+r)%len(targets)]
				got, err := t.run(w)
				if err != nil {
					return fmt.Errorf("%s on %s: %w", w.name, t.name, err)
				}
				if res[w.name] == nil {
					res[w.name] = map[string][]result{}
				}
				res[w.name][t.name] = append(res[w.name][t.name], got)
			}
		}
		fmt.Fprintf(os.Stderr, "round %d of %d done\n", r+1, rounds)
	}
	report(os.Stdout, l, size, rounds, runtime, targets, res)
	return nil
}

func mountAt(root, name string, b fuse.Backend, o fuse.Options) (*fuse.Mount, error) {
	dir := filepath.Join(root, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	return fuse.Serve(dir, b, o)
}

func unmount(m *fuse.Mount) {
	if err := m.Unmount(); err != nil {
		m.Detach()
	}
	m.Wait()
}

// runFio runs one fio job on path and returns what it measured.
func runFio(path string, size int64, runtime time.Duration, w workload) (result, error) {
	args := append([]string{"--name=bench", "--filename=" + path, fmt.Sprintf("--size=%d", size),
		"--output-format=json", "--group_reporting"}, w.args...)
	if w.timed {
		args = append(args, "--time_based", fmt.Sprintf("--runtime=%dms", runtime.Milliseconds()), "--ramp_time=500ms")
	}
	var out, errb bytes.Buffer
	cmd := exec.Command("fio", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("fio: %v: %s", err, errb.String())
	}
	var rep struct {
		Jobs []struct {
			Error        int     `json:"error"`
			Read         fioSide `json:"read"`
			Write        fioSide `json:"write"`
			JobRuntimeMS float64 `json:"job_runtime"`
		} `json:"jobs"`
	}
	// fio may print notices before the JSON.
	js := out.Bytes()
	if i := bytes.IndexByte(js, '{'); i > 0 {
		js = js[i:]
	}
	if err := json.Unmarshal(js, &rep); err != nil || len(rep.Jobs) != 1 {
		return result{}, fmt.Errorf("fio report: %v: %s", err, out.String())
	}
	j := rep.Jobs[0]
	if j.Error != 0 {
		return result{}, fmt.Errorf("fio reports error %d", j.Error)
	}
	side := j.Read
	if w.write {
		side = j.Write
	}
	r := result{bps: side.BW, iops: side.IOPS, p50: side.Clat.Pct["50.000000"] / 1e6, p99: side.Clat.Pct["99.000000"] / 1e6}
	if !w.timed && j.JobRuntimeMS > 0 {
		// Whole-file jobs: count the final fsync in the rate.
		r.bps = float64(side.IOBytes) / (j.JobRuntimeMS / 1e3)
	}
	return r, nil
}

type fioSide struct {
	BW      float64 `json:"bw_bytes"`
	IOPS    float64 `json:"iops"`
	IOBytes int64   `json:"io_bytes"`
	Clat    struct {
		Pct map[string]float64 `json:"percentile"`
	} `json:"clat_ns"`
}

// runEngine drives the volume in-process with the workload's shape: 16
// requests in flight (one for buffered writes), for the runtime.
func runEngine(vol *raid.Volume, size int64, runtime time.Duration, w workload) (result, error) {
	bs, seq, depth := int64(1<<20), true, 16
	for _, a := range w.args {
		switch a {
		case "--bs=4k":
			bs = 4096
		case "--rw=randread", "--rw=randwrite":
			seq = false
		case "--ioengine=psync":
			depth = 1
		}
	}
	var next atomic.Int64
	var ops atomic.Int64
	var firstErr error
	var mu sync.Mutex
	lat := make([][]time.Duration, depth)
	deadline := time.Now().Add(runtime)
	var wg sync.WaitGroup
	start := time.Now()
	for q := range depth {
		wg.Go(func() {
			buf := blockdev.AllocAligned(int(bs))
			rng := rand.New(rand.NewPCG(uint64(q), 1))
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
			for time.Now().Before(deadline) {
				off := (next.Add(1) - 1) * bs % size
				if !seq {
					off = rng.Int64N(size/bs) * bs
				}
				t0 := time.Now()
				var err error
				if w.write {
					_, err = vol.WriteAt(buf, off)
				} else {
					_, err = vol.ReadAt(buf, off)
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				lat[q] = append(lat[q], time.Since(t0))
				ops.Add(1)
			}
		})
	}
	wg.Wait()
	if w.write && depth == 1 {
		if err := vol.Flush(); err != nil {
			return result{}, err
		}
	}
	took := time.Since(start).Seconds()
	if firstErr != nil {
		return result{}, firstErr
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(p*float64(len(all)-1))]) / 1e6
	}
	n := float64(ops.Load())
	return result{bps: n * float64(bs) / took, iops: n / took, p50: pct(0.5), p99: pct(0.99)}, nil
}

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[len(v)/2]
}

func report(out io.Writer, l raid.Layout, size int64, rounds int, runtime time.Duration, targets []target, res map[string]map[string][]result) {
	factor := 1.0
	if l.Parity > 0 {
		factor = float64(l.Data) / float64(l.Data+l.Parity)
	} else if l.Copies > 1 {
		factor = 1 / float64(l.Copies)
	}
	fmt.Fprintf(out, "mount benchmark: %s, %s, fio QD16 O_DIRECT unless noted; medians of %d rounds of %s\n\n",
		l, raid.FormatSize(size), rounds, runtime)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	var head []string
	for _, t := range targets {
		head = append(head, t.name)
	}
	fmt.Fprintf(tw, "workload\t%s\tmount/floor\ttarget\tp50 ms (floor/mount)\tp99 ms (floor/mount)\t\n", strings.Join(head, "\t"))
	for _, w := range workloads {
		var cells []string
		for _, t := range targets {
			cells = append(cells, fmt.Sprintf("%.0f MB/s", median(res[w.name][t.name], func(r result) float64 { return r.bps })/1e6))
		}
		floor := median(res[w.name]["FUSE floor"], func(r result) float64 { return r.bps })
		mnt := median(res[w.name]["lockstep mount"], func(r result) float64 { return r.bps })
		if w.name == "buffered write+fsync" {
			mnt = max(mnt, median(res[w.name]["mount+writeback"], func(r result) float64 { return r.bps }))
		}
		target := "-"
		if w.write {
			target = fmt.Sprintf("%.2f", 0.8*factor)
		} else if strings.HasPrefix(w.name, "seq") {
			target = "0.80"
		}
		p := func(name string, f func(result) float64) float64 { return median(res[w.name][name], f) }
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%.2f / %.2f\t%.2f / %.2f\t\n", w.name, strings.Join(cells, "\t"), mnt/floor, target,
			p("FUSE floor", func(r result) float64 { return r.p50 }), p("lockstep mount", func(r result) float64 { return r.p50 }),
			p("FUSE floor", func(r result) float64 { return r.p99 }), p("lockstep mount", func(r result) float64 { return r.p99 }))
	}
	tw.Flush()
	fmt.Fprintf(out, "\ntarget: mount/floor at least 0.8 × the layout's write factor (%.2f) for writes, 0.8 for sequential reads.\n", factor)
	fmt.Fprintln(out, "mount/floor for buffered writes takes the better of the two mounts; the writeback cache column shows its effect.")
}
