package scrub_test

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
	"github.com/lockstepfs/lockstep/scrub"
)

const bs = blockdev.BlockSize

// events collects a volume's events.
type events chan raid.Event

// waitFor returns the next event of the given kind whose reason contains
// text, failing the test if none comes within a generous bound.
func (ch events) waitFor(t *testing.T, kind, text string) raid.Event {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case e := <-ch:
			if e.Kind == kind && strings.Contains(e.Reason, text) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %s event saying %q", kind, text)
		}
	}
}

// setup makes a raid6 array of ten regions, fully written, with a spare,
// and returns it with its model and event channel.
func setup(t *testing.T) (*raidtest.Array, raidtest.Model, events) {
	t.Helper()
	ev := make(events, 10000)
	spare := filepath.Join(t.TempDir(), "spare")
	c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 40 << 20, Spares: []string{spare}}
	a := raidtest.New(t, c, 6, raid.Options{OnEvent: func(e raid.Event) { ev <- e }})
	m := make(raidtest.Model, c.Size)
	raidtest.Fill(rand.New(rand.NewPCG(1, 2)), m)
	if _, err := a.Vol.WriteAt(m, 0); err != nil {
		t.Fatal(err)
	}
	return a, m, ev
}

func start(t *testing.T, v *raid.Volume, rate scrub.Rate) *scrub.Runner {
	t.Helper()
	r, err := scrub.Start(v, rate, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

// rot flips a byte in n distinct blocks of a member's data file, within
// its first size bytes, and returns how many it flipped.
func rot(t *testing.T, dir string, size int64, n int, rng *rand.Rand) int64 {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, blockdev.DataFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, blk := range rng.Perm(int(size / bs))[:n] {
		b := []byte{0}
		at := int64(blk)*bs + rng.Int64N(bs)
		f.ReadAt(b, at)
		b[0] ^= 0x5a
		if _, err := f.WriteAt(b, at); err != nil {
			t.Fatal(err)
		}
	}
	return int64(n)
}

func TestRunnerRebuildsAFencedMember(t *testing.T) {
	a, m, ev := setup(t)
	start(t, a.Vol, scrub.DefaultRate)
	if err := a.Vol.Fail(2); err != nil {
		t.Fatal(err)
	}
	e := ev.waitFor(t, raid.KindRebuild, "done")
	if e.Slot != 2 || e.New != "ONLINE" {
		t.Fatalf("rebuild event: %+v", e)
	}
	if st := a.Vol.Status(); st.State != raid.ArrayOptimal {
		t.Fatalf("after the rebuild: %+v", st)
	}
	raidtest.Expect(t, a.Vol, m, 0, int64(len(m)))
}

// TestScrubCheckThenRepair rots blocks on two members: a check scrub finds
// them all and repairs none, a scrub repairs them all, and a third finds
// nothing. Coverage then counts every written region as verified.
func TestScrubCheckThenRepair(t *testing.T) {
	a, m, ev := setup(t)
	a.Close(t)
	rng := rand.New(rand.NewPCG(3, 4))
	memberBytes := int64(len(m)) / 4 // raid6 over 6 members: 4 data chunks a stripe
	want := make([]int64, 6)
	want[1] = rot(t, a.Dirs[1], memberBytes, 7, rng)
	want[4] = rot(t, a.Dirs[4], memberBytes, 5, rng)
	a.Open(t, a.Dirs...)
	r := start(t, a.Vol, scrub.DefaultRate)

	run := func(check bool) scrub.Scrub {
		t.Helper()
		if _, err := r.StartScrub(check); err != nil {
			t.Fatal(err)
		}
		ev.waitFor(t, "scrub", "done")
		s, _, ok := r.ScrubStatus()
		if !ok || s.State != scrub.Finished || s.Done != int64(len(m)) || s.Total != s.Done {
			t.Fatalf("scrub status: %+v", s)
		}
		return s
	}
	if s := run(true); !slices.Equal(s.Bad, want) || slices.ContainsFunc(s.Repaired, func(n int64) bool { return n != 0 }) {
		t.Fatalf("check scrub: bad %v repaired %v, want bad %v and nothing repaired", s.Bad, s.Repaired, want)
	}
	if s := run(false); !slices.Equal(s.Bad, want) || !slices.Equal(s.Repaired, want) {
		t.Fatalf("scrub: bad %v repaired %v, want both %v", s.Bad, s.Repaired, want)
	}
	if s := run(true); slices.ContainsFunc(s.Bad, func(n int64) bool { return n != 0 }) {
		t.Fatalf("scrub after the repair found %v", s.Bad)
	}
	c, err := r.Coverage()
	if err != nil {
		t.Fatal(err)
	}
	if c.Regions != 10 || c.Never != 0 || c.Oldest.IsZero() || c.Newest.Before(c.Oldest) {
		t.Fatalf("coverage: %+v", c)
	}
	raidtest.Expect(t, a.Vol, m, 0, int64(len(m)))
}

// TestScrubPausesAndResumesAcrossRestarts pauses a throttled scrub, closes
// and reopens the volume: the scrub comes back paused where it was, and
// resumed it finishes.
func TestScrubPausesAndResumesAcrossRestarts(t *testing.T) {
	a, m, ev := setup(t)
	// 16 MiB a second: each step (eight regions) waits two seconds for
	// its tokens.
	r := start(t, a.Vol, scrub.Rate{Min: 16 << 20, Max: 16 << 20})
	if _, err := r.StartScrub(false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.StartScrub(false); !errors.Is(err, scrub.ErrBusy) {
		t.Fatalf("a second scrub = %v, want ErrBusy", err)
	}
	paused, err := r.PauseScrub()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.PauseScrub(); !errors.Is(err, scrub.ErrNoScrub) {
		t.Fatalf("pausing twice = %v, want ErrNoScrub", err)
	}
	r.Stop()
	a.Open(t, a.Dirs...)
	r = start(t, a.Vol, scrub.DefaultRate)
	s, _, ok := r.ScrubStatus()
	if !ok || s.State != scrub.Paused || s.Done < paused.Done {
		t.Fatalf("after a restart: %+v, paused at %+v", s, paused)
	}
	if s.Done >= int64(len(m)) {
		t.Fatalf("the scrub finished before it could be paused: %+v", s)
	}
	if _, err := r.ResumeScrub(); err != nil {
		t.Fatal(err)
	}
	ev.waitFor(t, "scrub", "done")
	if s, _, _ := r.ScrubStatus(); s.State != scrub.Finished || s.Done != int64(len(m)) {
		t.Fatalf("resumed scrub: %+v", s)
	}
	if _, err := r.CancelScrub(); !errors.Is(err, scrub.ErrNoScrub) {
		t.Fatalf("cancelling a finished scrub = %v, want ErrNoScrub", err)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]scrub.Rate{"32MiB:0": {Min: 32 << 20}, "1MiB:1GiB": {Min: 1 << 20, Max: 1 << 30}, "0:0": {}} {
		if got, err := scrub.ParseRate(in); err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "10MiB", "x:1", "1:y", "2MiB:1MiB"} {
		if _, err := scrub.ParseRate(in); !errors.Is(err, scrub.ErrBadRate) {
			t.Errorf("ParseRate(%q) = %v, want ErrBadRate", in, err)
		}
	}
}

// TestScrubResumesAfterACrash crashes the volume (no flush, no clean
// shutdown) in the middle of a throttled scrub: reopened, the scrub goes on
// from its last record, not from the start, and finishes; the data is
// intact.
func TestScrubResumesAfterACrash(t *testing.T) {
	a, m, ev := setup(t)
	r := start(t, a.Vol, scrub.Rate{Min: 32 << 20, Max: 32 << 20})
	if _, err := r.StartScrub(false); err != nil {
		t.Fatal(err)
	}
	var before scrub.Scrub
	for deadline := time.Now().Add(time.Minute); before.Done == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the scrub made no progress in a minute")
		}
		time.Sleep(5 * time.Millisecond) // polling the runner's progress from outside
		before, _, _ = r.ScrubStatus()
	}
	r.Stop()
	a.Vol.Crash()
	a.Vol = nil
	a.Open(t, a.Dirs...)
	r = start(t, a.Vol, scrub.DefaultRate)
	s, _, _ := r.ScrubStatus()
	if s.State != scrub.Running && s.State != scrub.Finished || s.Done < before.Done || s.Done == 0 {
		t.Fatalf("after the crash: %+v; before it: %+v", s, before)
	}
	if s.State == scrub.Running {
		ev.waitFor(t, "scrub", "done")
	}
	if s, _, _ := r.ScrubStatus(); s.State != scrub.Finished || s.Done != int64(len(m)) {
		t.Fatalf("resumed scrub: %+v", s)
	}
	raidtest.Expect(t, a.Vol, m, 0, int64(len(m)))
}

// TestRebuildPauseAndResume holds a rebuild back and lets it go; each
// refuses to do twice what it did.
func TestRebuildPauseAndResume(t *testing.T) {
	a, m, ev := setup(t)
	r := start(t, a.Vol, scrub.DefaultRate)
	if err := r.PauseRebuild(); err == nil {
		t.Fatal("pausing with no rebuild under way succeeded")
	}
	if err := r.ResumeRebuild(); err == nil {
		t.Fatal("resuming a rebuild that is not paused succeeded")
	}
	// A slow runner, so that the rebuild is still under way when paused.
	r.Stop()
	r = start(t, a.Vol, scrub.Rate{Min: 1, Max: 1})
	if err := a.Vol.Fail(3); err != nil {
		t.Fatal(err)
	}
	if err := r.PauseRebuild(); err != nil {
		t.Fatal(err)
	}
	if err := r.PauseRebuild(); err == nil || !r.RebuildPaused() {
		t.Fatalf("pausing twice: %v, paused %v", err, r.RebuildPaused())
	}
	r.Stop()
	start(t, a.Vol, scrub.DefaultRate) // pausing lasts until the mount stops
	ev.waitFor(t, raid.KindRebuild, "done")
	raidtest.Expect(t, a.Vol, m, 0, int64(len(m)))
}
