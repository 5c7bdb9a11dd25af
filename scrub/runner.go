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

// run takes steps while there is work, and sleeps until there is.
func (r *Runner) run() {
	defer close(r.done)
	fg := r.v.Foreground()
	for {
		kind, n, took, err := r.step()
		if err != nil {
			r.log.Warn("background step failed; retrying in a second", "job", kind, "err", err)
			if !r.pause(time.Second) {
				return
			}
			continue
		}
		if kind == "" {
			select {
			case <-r.stop:
				return
			case <-r.v.Work():
			case <-r.wake:
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
		// Throttle: the maximum while users are idle, the minimum while
		// they are busy.
		now := r.v.Foreground()
		busy := now != fg
		fg = now
		limit := r.rate.Max
		if busy {
			limit = r.rate.Min
		}
		wait := time.Duration(0)
		switch {
		case limit > 0:
			wait = time.Duration(float64(n)/float64(limit)*float64(time.Second)) - took
		case busy: // a minimum of 0: wait for users to pause
			wait = 100 * time.Millisecond
		}
		if !r.pause(wait) {
			return
		}
	}
}

// pause waits for d, or until Stop (false).
func (r *Runner) pause(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.stop:
		return false
	case <-t.C:
		return true
	}
}

// step does one step of the most urgent work: a rebuild, then a scrub. It
// returns the kind of work done ("" if none) and the volume bytes covered.
func (r *Runner) step() (kind string, n int64, took time.Duration, err error) {
	start := time.Now()
	r.mu.Lock()
	rebuild := !r.rebuildPaused && len(r.v.Rebuilds()) > 0
	scrub := r.scrub != nil && r.scrub.State == Running
	r.mu.Unlock()
	switch {
	case rebuild:
		kind = "rebuild"
		n, _, err = r.v.RebuildStep()
	case scrub:
		kind = "scrub"
		n, err = r.scrubStep()
	}
	return kind, n, time.Since(start), err
}

// scrubStep scrubs the next written region and records the progress.
func (r *Runner) scrubStep() (int64, error) {
	r.mu.Lock()
	s := *r.scrub
	s.Bad, s.Repaired = slices.Clone(s.Bad), slices.Clone(s.Repaired)
	r.mu.Unlock()
	regions := r.v.WrittenRegions()
	i, _ := slices.BinarySearch(regions, s.Next)
	recs := map[string][]byte{}
	var n int64
	start := time.Now()
	if i < len(regions) {
		reg := regions[i]
		rs := r.v.RegionStripes()
		res, err := r.v.Scrub(reg*rs, (reg+1)*rs, s.Check)
		if err != nil {
			return 0, err
		}
		n = res.Bytes
		s.Done += n
		for slot := range res.Bad {
			s.Bad[slot] += res.Bad[slot]
			s.Repaired[slot] += res.Repaired[slot]
		}
		for _, e := range res.Lost {
			s.Lost += e.Len
		}
		s.Next = reg + 1
		recs[recVerified+strconv.FormatInt(reg, 10)] = []byte(strconv.FormatInt(time.Now().Unix(), 10))
		// Regions written since the scrub began make the total grow.
		s.Total = max(s.Total, s.Done)
	}
	s.Active += time.Since(start)
	done := i+1 >= len(regions)
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
	if err := r.v.Note("scrub", reason); err != nil {
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
	if err := r.v.Note("scrub-start", fmt.Sprintf("%s of %s started", what, raid.FormatSize(total))); err != nil {
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
