package raid_test

import (
	"bufio"
	"fmt"
	"hash/crc64"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// The crash harness: a child process (this test binary, in child mode) runs
// a seeded workload of writes and flushes on an array and records each step
// in a log before and after it; the parent kills it with SIGKILL at a random
// step, reopens the array (which recovers) and checks what survived against
// the log.

// Environment of the child.
const (
	envCrashDirs   = "LOCKSTEP_CRASH_DIRS" // member directories, by slot, joined with ":"
	envCrashLog    = "LOCKSTEP_CRASH_LOG"
	envCrashSeed   = "LOCKSTEP_CRASH_SEED"
	envCrashPolicy = "LOCKSTEP_CRASH_POLICY"
)

// crashIterations is how many crashes make test runs per layout;
// LOCKSTEP_CRASH_ITERATIONS raises it for make soak.
func crashIterations() int {
	if n, err := strconv.Atoi(os.Getenv("LOCKSTEP_CRASH_ITERATIONS")); err == nil && n > 0 {
		return n
	}
	return 10
}

// crashData is the content of the write with sequence number seq: any
// process can compute it again from the seed.
func crashData(seed uint64, seq, n int64) []byte {
	p := make([]byte, n)
	raidtest.Fill(rand.New(rand.NewPCG(seed, uint64(seq))), p)
	return p
}

// TestCrashChild is the child's workload. It does nothing unless started
// by TestCrashRecovery.
func TestCrashChild(t *testing.T) {
	dirs := os.Getenv(envCrashDirs)
	if dirs == "" {
		return
	}
	seed, _ := strconv.ParseUint(os.Getenv(envCrashSeed), 10, 64)
	logf, err := os.OpenFile(os.Getenv(envCrashLog), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	v, err := raid.Open(strings.Split(dirs, ":"), raid.Options{Logger: quiet, Consistency: raid.Consistency(os.Getenv(envCrashPolicy))})
	if err != nil {
		t.Fatal(err)
	}
	note := func(format string, args ...any) {
		if _, err := fmt.Fprintf(logf, format+"\n", args...); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	out := bufio.NewWriter(os.Stdout)
	for seq := int64(1); ; seq++ {
		if rng.IntN(8) == 0 {
			note("F %d", seq)
			if err := v.Flush(); err != nil {
				t.Fatal(err)
			}
			note("S %d", seq)
		} else {
			off, n := raidtest.RandomRange(rng, v.Size(), 96<<10)
			note("W %d %d %d", seq, off, n)
			if _, err := v.WriteAt(crashData(seed, seq, n), off); err != nil {
				t.Fatal(err)
			}
			note("D %d", seq)
		}
		fmt.Fprintf(out, "%d\n", seq)
		out.Flush()
	}
}

// crashLog is what the child recorded.
type crashLog struct {
	writes  []crashWrite
	flushed int64 // writes below this sequence number were flushed
}

type crashWrite struct{ seq, off, n int64 }

func readCrashLog(t *testing.T, path string) crashLog {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var l crashLog
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		nums := make([]int64, len(f)-1)
		for i := range nums {
			if nums[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
				t.Fatalf("crash log line %q: %v", line, err)
			}
		}
		switch f[0] {
		case "W":
			l.writes = append(l.writes, crashWrite{nums[0], nums[1], nums[2]})
		case "S":
			l.flushed = nums[0]
		}
	}
	return l
}

// admissible returns, for each block of the volume, the hashes of the
// contents it may hold after the crash: the content the last flush made
// durable, or any content a later write (finished or not) gave it.
func (l crashLog) admissible(seed uint64, size int64) []map[uint64]bool {
	table := crc64.MakeTable(crc64.ECMA)
	model := make([]byte, size)
	ok := make([]map[uint64]bool, size/bs)
	sum := func(b int64) uint64 { return crc64.Checksum(model[b*bs:(b+1)*bs], table) }
	durable := false
	settle := func() {
		for b := range ok {
			ok[b] = map[uint64]bool{sum(int64(b)): true}
		}
		durable = true
	}
	for _, w := range l.writes {
		if w.seq > l.flushed && !durable {
			settle()
		}
		copy(model[w.off:], crashData(seed, w.seq, w.n))
		if durable {
			for b := w.off / bs; b <= (w.off+w.n-1)/bs; b++ {
				ok[b][sum(b)] = true
			}
		}
	}
	if !durable {
		settle()
	}
	return ok
}

// checkBlocks reads the whole volume and checks every block against what
// it may hold; it returns the volume's contents.
func checkBlocks(t *testing.T, v *raid.Volume, ok []map[uint64]bool, when string) []byte {
	t.Helper()
	got := make([]byte, v.Size())
	if _, err := v.ReadAt(got, 0); err != nil {
		t.Fatalf("%s: reading the volume: %v", when, err)
	}
	table := crc64.MakeTable(crc64.ECMA)
	for b := range ok {
		if !ok[b][crc64.Checksum(got[int64(b)*bs:int64(b+1)*bs], table)] {
			t.Fatalf("%s: block %d holds neither its flushed content nor any later write's", when, b)
		}
	}
	return got
}

func TestCrashRecovery(t *testing.T) {
	for _, g := range []struct {
		layout  string
		members int
		lose    int // members removed after recovery: the write-hole test
		policy  raid.Consistency
		// degraded members are missing from the start: the crash finds
		// the array degraded, which only the journal survives.
		degraded int
	}{
		{"raid1", 2, 1, raid.ConsistencyBitmap, 0},
		{"mirror:3", 3, 2, raid.ConsistencyBitmap, 0},
		{"raid5", 4, 1, raid.ConsistencyBitmap, 0},
		{"raid6", 6, 2, raid.ConsistencyBitmap, 0},
		{"raid5", 3, 1, raid.ConsistencyResync, 0},
		{"raid6", 5, 2, raid.ConsistencyResync, 0},
		{"raid5", 4, 1, raid.ConsistencyJournal, 0},
		{"raid6", 6, 2, raid.ConsistencyJournal, 0},
		{"raid5", 4, 0, raid.ConsistencyJournal, 1},
		{"raid6", 6, 1, raid.ConsistencyJournal, 1},
	} {
		name := fmt.Sprintf("%s-%d-%s", g.layout, g.members, g.policy)
		if g.degraded > 0 {
			name += "-degraded"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rng := seeded(t)
			var flushed, read int64
			n := crashIterations()
			for it := range n {
				c := raid.Config{Layout: g.layout, Chunk: 4 << 10, Size: 6 << 20}
				flushed += crashOnce(t, rng, c, g.members, g.degraded, g.lose, g.policy, it)
				read += 2 * c.Size
			}
			t.Logf("tally %s: %d crashes, %d recoveries, %s of flushed writes verified, %s read back and compared, every check passed",
				t.Name(), n, n, raid.FormatSize(flushed), raid.FormatSize(read))
		})
	}
}

// crashOnce runs the child on a new array, kills it, recovers and checks.
// It returns how many bytes of flushed writes it checked.
func crashOnce(t *testing.T, rng *rand.Rand, c raid.Config, members, degraded, lose int, policy raid.Consistency, it int) int64 {
	t.Helper()
	root := t.TempDir()
	var all []string
	for i := range members {
		all = append(all, filepath.Join(root, fmt.Sprintf("m%d", i)))
	}
	if _, err := raid.Create(all, c); err != nil {
		t.Fatal(err)
	}
	dirs := all[degraded:]
	seed := rng.Uint64()
	logPath := filepath.Join(root, "log")
	child := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	child.Env = append(os.Environ(), envCrashDirs+"="+strings.Join(dirs, ":"), envCrashLog+"="+logPath,
		envCrashSeed+"="+strconv.FormatUint(seed, 10), envCrashPolicy+"="+string(policy))
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	child.Stderr = &stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it after a random number of steps.
	steps := 5 + rng.IntN(150)
	sc := bufio.NewScanner(stdout)
	for i := 0; i < steps && sc.Scan(); i++ {
	}
	child.Process.Signal(syscall.SIGKILL)
	child.Wait()
	if !strings.Contains(child.ProcessState.String(), "killed") {
		t.Fatalf("iteration %d: the child ended by itself (%s) before the crash:\n%s", it, child.ProcessState, stderr.String())
	}
	log := readCrashLog(t, logPath)
	ok := log.admissible(seed, c.Size)

	ev := make(events, 10000)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	a := &raidtest.Array{Dirs: all, Config: c, Options: raid.Options{Consistency: policy, OnEvent: ev.on, Logger: quiet}}
	a.Open(t, dirs...)
	ev.waitFor(t, "recover", -1)
	// A check scrub, before any read can repair what it finds, finds the
	// copies, parity and checksums in agreement.
	res, err := a.Vol.Scrub(0, a.Vol.Stripes(), true)
	if err != nil || sum(res.Bad) != 0 || len(res.Lost) != 0 {
		t.Fatalf("iteration %d: check scrub after recovery: bad blocks %v, lost %v, %v", it, res.Bad, res.Lost, err)
	}
	whole := checkBlocks(t, a.Vol, ok, fmt.Sprintf("iteration %d after recovery", it))
	a.Close(t)
	if degraded == 0 {
		raidtest.CheckConsistent(t, c, dirs)
	}

	// The write hole: with members lost, what was read before must read
	// the same, since nothing was being written any more.
	keep := rng.Perm(len(dirs))[lose:]
	var left []string
	for _, i := range keep {
		left = append(left, dirs[i])
	}
	a.Open(t, left...)
	got := make([]byte, c.Size)
	if _, err := a.Vol.ReadAt(got, 0); err != nil {
		t.Fatalf("iteration %d: with %d member(s) lost after recovery: %v", it, lose, err)
	}
	if d := firstDiffAt(got, whole); d >= 0 {
		t.Fatalf("iteration %d: with %d member(s) lost after recovery, byte %d differs from what the full array read", it, lose, d)
	}
	a.Close(t)
	return log.flushedBytes()
}

// flushedBytes is how many bytes the flushed writes carried.
func (l crashLog) flushedBytes() int64 {
	var n int64
	for _, w := range l.writes {
		if w.seq < l.flushed {
			n += w.n
		}
	}
	return n
}

func firstDiffAt(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}
