package scrub

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/lockstepfs/lockstep/raid"
)

// Scrub states.
const (
	Running  = "running"
	Paused   = "paused"
	Finished = "finished"
	Canceled = "canceled"
)

// Errors callers branch on.
var (
	ErrBusy    = errors.New("a scrub is already under way")
	ErrNoScrub = errors.New("no scrub is under way")
)

// Scrub is a scrub's progress, or the last one's result.
type Scrub struct {
	State    string    `json:"state"`
	Check    bool      `json:"check"` // find, but do not repair
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	// Active is the time spent scrubbing (not paused, not waiting for a
	// restart).
	Active time.Duration `json:"active_ns"`
	Done   int64         `json:"done_bytes"`
	Total  int64         `json:"total_bytes"`
	// Next is the first region not yet scrubbed.
	Next int64 `json:"next_region"`
	// Bad, Repaired and Lost count blocks, by slot, and bytes beyond
	// redundancy.
	Bad      []int64 `json:"bad_blocks"`
	Repaired []int64 `json:"repaired_blocks"`
	Lost     int64   `json:"lost_bytes"`
}

// stepRegions is how many regions a step does while users are idle, up to
// raid.RegionsInFlight at once: twice as many, so that the disks stay busy
// while the first regions finish.
const stepRegions = 2 * raid.RegionsInFlight

// Job record names.
const (
	recScrub    = "scrub"
	recVerified = "verified/"
)

// Runner runs a volume's rebuilds and scrubs in the background, one step
// at a time, throttled. It is safe for concurrent use.
type Runner struct {
	v    *raid.Volume
	rate Rate
	log  *slog.Logger

	mu            sync.Mutex
	rebuildPaused bool
	scrub         *Scrub // the scrub under way or the last one; nil if never
	rates         map[string]*meter

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// meter is an exponentially smoothed rate.
type meter struct {
	perSec float64
	at     time.Time
}

func (m *meter) add(n int64, d time.Duration) {
	if d <= 0 {
		return
	}
	r := float64(n) / d.Seconds()
	if m.perSec == 0 {
		m.perSec = r
	} else {
		m.perSec = 0.7*m.perSec + 0.3*r
	}
	m.at = time.Now()
}

// Start loads the last scrub's record and starts running the volume's
// background work, until Stop.
func Start(v *raid.Volume, rate Rate, log *slog.Logger) (*Runner, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Runner{v: v, rate: rate, log: log, rates: map[string]*meter{},
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	err := v.ScanJobRecords(recScrub, func(name string, val []byte) error {
		if name != recScrub {
			return nil
		}
		var s Scrub
		if err := json.Unmarshal(val, &s); err != nil {
			return fmt.Errorf("scrub record: %w", err)
		}
		r.scrub = &s
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s := r.scrub; s != nil && s.State == Running {
		log.Info("resuming the scrub", "done_bytes", s.Done, "total_bytes", s.Total)
	}
	go r.run()
	return r, nil
}

// Stop stops the runner after the step under way; the scrub's progress is
// kept for the next Start.
func (r *Runner) Stop() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
}

func (r *Runner) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// busyWindow is how long after users' last request they count as busy.
const busyWindow = 500 * time.Millisecond

// busyStep is the volume data a rebuild step covers while users are busy:
// small, so that each step holds the disks for a moment only.
const busyStep = 1 << 20

// run takes steps while there is work, and sleeps until there is. A token
// bucket holds the work to the rate: it fills at the maximum while users are
// idle and at the minimum while they are busy, up to one step's worth, and
// a step waits until it is full. While users are busy steps are one region,
// so that each holds the disks for a short while.
func (r *Runner) run() {
	defer close(r.done)
	fg := r.v.Foreground()
	var lastActive time.Time
	var tokens float64
	filled := time.Now()
	for {
		kind := r.pending()
		if kind == "" {
			select {
			case <-r.stop:
				return
			case <-r.v.Work():
			case <-r.wake:
			}
			continue
		}
		if now := r.v.Foreground(); now != fg {
			fg, lastActive = now, time.Now()
		}
		busy := time.Since(lastActive) < busyWindow
		region := r.v.RegionStripes() * r.v.StripeBytes()
		limit, regions, budget := r.rate.Max, stepRegions, int64(stepRegions)*region
		if busy {
			limit, regions, budget = r.rate.Min, 1, busyStep
		}
		need := float64(budget)
		if kind == "scrub" {
			need = float64(int64(regions) * region)
		}
		tokens = min(need, tokens+time.Since(filled).Seconds()*float64(limit))
		filled = time.Now()
		switch {
		case limit > 0 && tokens < need:
			if !r.pause(time.Duration((need - tokens) / float64(limit) * float64(time.Second))) {
				return
			}
			continue
		case limit == 0 && busy: // a minimum of 0: wait for users to pause
			if !r.pause(100 * time.Millisecond) {
				return
			}
			continue
		}
		n, took, err := r.step(kind, budget, regions)
		if limit > 0 {
			tokens -= float64(n)
		}
		if err != nil {
			r.log.Warn("background step failed; retrying in a second", "job", kind, "err", err)
			if !r.pause(time.Second) {
				return
			}
			continue
		}
		r.mu.Lock()
		m := r.rates[kind]
		if m == nil {
			m = &meter{}
			r.rates[kind] = m
		}
		m.add(n, took)
		r.mu.Unlock()
	}
}

// pause waits for d, or until Stop (false) or a poke.
func (r *Runner) pause(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.stop:
		return false
	case <-r.wake:
		return true
	case <-t.C:
		return true
	}
}

// pending returns the most urgent kind of work waiting: a rebuild, then a
// scrub; "" if none.
func (r *Runner) pending() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !r.rebuildPaused && len(r.v.Rebuilds()) > 0:
		return "rebuild"
	case r.scrub != nil && r.scrub.State == Running:
		return "scrub"
	}
	return ""
}

// step does one step of the given kind of work: a rebuild over up to
// budget volume bytes, a scrub over up to regions regions. It returns the
// volume bytes it covered.
func (r *Runner) step(kind string, budget int64, regions int) (n int64, took time.Duration, err error) {
	start := time.Now()
	switch kind {
	case "rebuild":
		n, _, err = r.v.RebuildStep(budget)
	case "scrub":
		n, err = r.scrubStep(regions)
	}
	return n, time.Since(start), err
}

// scrubStep scrubs the next written region and records the progress.
func (r *Runner) scrubStep(regions int) (int64, error) {
	r.mu.Lock()
	s := *r.scrub
	s.Bad, s.Repaired = slices.Clone(s.Bad), slices.Clone(s.Repaired)
	r.mu.Unlock()
	written := r.v.WrittenRegions()
	i, _ := slices.BinarySearch(written, s.Next)
	recs := map[string][]byte{}
	var n int64
	start := time.Now()
	// Several regions at once keep every member's queue busy.
	batch := written[i:min(len(written), i+regions)]
	results := make([]raid.ScrubResult, len(batch))
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	slots := make(chan struct{}, raid.RegionsInFlight)
	rs := r.v.RegionStripes()
	for k, reg := range batch {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			results[k], errs[k] = r.v.Scrub(reg*rs, (reg+1)*rs, s.Check)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	now := strconv.FormatInt(time.Now().Unix(), 10)
	for k, res := range results {
		n += res.Bytes
		for slot := range res.Bad {
			s.Bad[slot] += res.Bad[slot]
			s.Repaired[slot] += res.Repaired[slot]
		}
		for _, e := range res.Lost {
			s.Lost += e.Len
		}
		recs[recVerified+strconv.FormatInt(batch[k], 10)] = []byte(now)
	}
	if len(batch) > 0 {
		s.Next = batch[len(batch)-1] + 1
	}
	s.Done += n
	// Regions written since the scrub began make the total grow.
	s.Total = max(s.Total, s.Done)
	s.Active += time.Since(start)
	done := i+len(batch) >= len(written)
	// Keep a state set meanwhile (paused, canceled): saved under r.mu, the
	// last record stored is the latest.
	r.mu.Lock()
	defer r.mu.Unlock()
	s.State, s.Finished = r.scrub.State, r.scrub.Finished
	if done && s.State == Running {
		s.State, s.Finished, s.Total = Finished, time.Now(), s.Done
	}
	val, _ := json.Marshal(s)
	recs[recScrub] = val
	if err := r.v.SaveJobRecords(recs, done); err != nil {
		return n, err
	}
	*r.scrub = s
	if s.State == Finished {
		r.finished(s)
	}
	return n, nil
}

// finished records the end of a scrub as an event.
func (r *Runner) finished(s Scrub) {
	what := "scrub"
	if s.Check {
		what = "check scrub"
	}
	reason := fmt.Sprintf("%s of %s done in %s: %d bad block(s) found, %d repaired, %s lost",
		what, raid.FormatSize(s.Done), s.Active.Round(time.Millisecond), sum(s.Bad), sum(s.Repaired), raid.FormatSize(s.Lost))
	r.log.Info("scrub finished", "check", s.Check, "bytes", s.Done, "bad_blocks", sum(s.Bad), "repaired_blocks", sum(s.Repaired), "lost_bytes", s.Lost, "took", s.Active)
	if err := r.v.Note(-1, "scrub", reason); err != nil {
		r.log.Warn("recording the scrub's end", "err", err)
	}
}

func sum(xs []int64) (n int64) {
	for _, x := range xs {
		n += x
	}
	return n
}

// StartScrub starts a scrub of every written region (check: find, but do
// not repair). It refuses while another is running or paused.
func (r *Runner) StartScrub(check bool) (Scrub, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.scrub; s != nil && (s.State == Running || s.State == Paused) {
		return *s, fmt.Errorf("%w (%s, %s of %s): lockstep scrub status, pause, resume or cancel", ErrBusy, s.State, raid.FormatSize(s.Done), raid.FormatSize(s.Total))
	}
	var total int64
	for _, reg := range r.v.WrittenRegions() {
		total += r.v.RegionBytes(reg)
	}
	members := len(r.v.Status().Members)
	s := &Scrub{State: Running, Check: check, Started: time.Now(), Total: total, Bad: make([]int64, members), Repaired: make([]int64, members)}
	if err := r.save(s); err != nil {
		return Scrub{}, err
	}
	r.scrub = s
	what := "scrub"
	if check {
		what = "check scrub"
	}
	if err := r.v.Note(-1, "scrub-start", fmt.Sprintf("%s of %s started", what, raid.FormatSize(total))); err != nil {
		r.log.Warn("recording the scrub's start", "err", err)
	}
	r.poke()
	return *s, nil
}

// save stores a scrub's record. r.mu is held.
func (r *Runner) save(s *Scrub) error {
	val, _ := json.Marshal(s)
	return r.v.SaveJobRecords(map[string][]byte{recScrub: val}, true)
}

// setScrub moves the scrub under way from one of the states from to state
// to.
func (r *Runner) setScrub(to string, from ...string) (Scrub, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.scrub
	if s == nil || !slices.Contains(from, s.State) {
		state := "none was ever started"
		if s != nil {
			state = "the last one is " + s.State
		}
		return Scrub{}, fmt.Errorf("%w that is %s (%s): lockstep scrub start begins one", ErrNoScrub, from[0], state)
	}
	next := *s
	next.State = to
	if to == Canceled {
		next.Finished = time.Now()
	}
	if err := r.save(&next); err != nil {
		return *s, err
	}
	*s = next
	r.poke()
	return next, nil
}

// PauseScrub pauses the scrub under way; it keeps its place.
func (r *Runner) PauseScrub() (Scrub, error) { return r.setScrub(Paused, Running) }

// ResumeScrub resumes a paused scrub.
func (r *Runner) ResumeScrub() (Scrub, error) { return r.setScrub(Running, Paused) }

// CancelScrub stops the scrub under way for good; what it found is kept as
// the last result.
func (r *Runner) CancelScrub() (Scrub, error) { return r.setScrub(Canceled, Running, Paused) }

// ScrubStatus returns the scrub under way or the last one, and its recent
// rate in bytes per second; ok is false if none was ever run.
func (r *Runner) ScrubStatus() (s Scrub, rate float64, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scrub == nil {
		return Scrub{}, 0, false
	}
	return *r.scrub, r.rateOf("scrub"), true
}

// rateOf returns the recent rate of a kind of work, 0 if it has not run
// for a while. r.mu is held.
func (r *Runner) rateOf(kind string) float64 {
	m := r.rates[kind]
	if m == nil || time.Since(m.at) > 10*time.Second {
		return 0
	}
	return m.perSec
}

// RebuildRate returns the recent rate of rebuilds, in bytes per second.
func (r *Runner) RebuildRate() float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rateOf("rebuild")
}

// PauseRebuild holds rebuilds and resyncs back until ResumeRebuild (or a
// restart). The member being rebuilt keeps taking writes meanwhile.
func (r *Runner) PauseRebuild() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.v.Rebuilds()) == 0 {
		return errors.New("no rebuild or resync is under way")
	}
	if r.rebuildPaused {
		return errors.New("the rebuild is paused already")
	}
	r.rebuildPaused = true
	return nil
}

// ResumeRebuild lets a paused rebuild go on.
func (r *Runner) ResumeRebuild() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.rebuildPaused {
		return errors.New("the rebuild is not paused")
	}
	r.rebuildPaused = false
	r.poke()
	return nil
}

// RebuildPaused reports whether rebuilds are held back.
func (r *Runner) RebuildPaused() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rebuildPaused
}

// Coverage says how recently the written regions were verified by a scrub.
type Coverage struct {
	Regions int `json:"regions"` // written regions
	// Never is how many were never verified.
	Never int `json:"never_verified"`
	// Oldest, Median and Newest are the times of the last verification of
	// the others.
	Oldest time.Time `json:"oldest,omitzero"`
	Median time.Time `json:"median,omitzero"`
	Newest time.Time `json:"newest,omitzero"`
}

// Coverage reports when each written region was last verified.
func (r *Runner) Coverage() (Coverage, error) {
	written := r.v.WrittenRegions()
	at := map[int64]int64{}
	err := r.v.ScanJobRecords(recVerified, func(name string, val []byte) error {
		reg, err1 := strconv.ParseInt(name[len(recVerified):], 10, 64)
		t, err2 := strconv.ParseInt(string(val), 10, 64)
		if err1 == nil && err2 == nil {
			at[reg] = t
		}
		return nil
	})
	if err != nil {
		return Coverage{}, err
	}
	c := Coverage{Regions: len(written)}
	var times []int64
	for _, reg := range written {
		if t, ok := at[reg]; ok {
			times = append(times, t)
		} else {
			c.Never++
		}
	}
	if len(times) > 0 {
		slices.Sort(times)
		c.Oldest, c.Median, c.Newest = time.Unix(times[0], 0), time.Unix(times[len(times)/2], 0), time.Unix(times[len(times)-1], 0)
	}
	return c, nil
}
