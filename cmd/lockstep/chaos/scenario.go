// Package chaos runs fault scenarios against a real mount: it creates an
// array, mounts it with lockstep mount, drives a workload whose every byte
// it can check, and walks a timeline of steps (inject faults, fail and
// replace members, crash and remount, scrub, wait for states and events,
// check expectations, verify the data), then reports what passed, how fast
// each fault was detected, fenced and rebuilt, and how much data it
// verified.
package chaos

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

// Scenario is one scenario file.
type Scenario struct {
	Name        string       `yaml:"name"`
	Description string       `yaml:"description"`
	Array       ArraySpec    `yaml:"array"`
	Workload    WorkloadSpec `yaml:"workload"`
	Steps       []Step       `yaml:"steps"`

	Path     string         `yaml:"-"`
	lines    []int          // the line of each step in the file
	sections map[string]int // the line of each top-level field
}

// ArraySpec is the array a scenario runs on and how it is mounted.
type ArraySpec struct {
	Layout        string        `yaml:"layout"`
	Members       int           `yaml:"members"`
	Spares        int           `yaml:"spares"`
	Size          string        `yaml:"size"`  // the volume's size
	Chunk         string        `yaml:"chunk"` // default 64KiB
	Consistency   string        `yaml:"consistency"`
	ReadPolicy    string        `yaml:"read-policy"`
	FailureLevel  *int          `yaml:"failure-level"`
	HealthTimeout time.Duration `yaml:"health-timeout"`
	AutoFailover  *bool         `yaml:"auto-failover"`
	RebuildRate   string        `yaml:"rebuild-rate"`
}

// WorkloadSpec is what runs against the volume throughout: a seeded mix of
// writes, reads and flushes that the runner checks against its record, or
// an external command.
type WorkloadSpec struct {
	Seed    uint64   `yaml:"seed"`
	Workers int      `yaml:"workers"` // default 2
	Span    string   `yaml:"span"`    // how much of the volume it uses; default all
	Sizes   []string `yaml:"sizes"`   // I/O sizes drawn from; default 4KiB and 64KiB
	Write   int      `yaml:"write"`   // relative weights; default 60/35/5
	Read    int      `yaml:"read"`
	Flush   int      `yaml:"flush"`
	// Command, if set, replaces the built-in workload: it is started at the
	// beginning, {volume} in it replaced by the volume's path, and must
	// exit 0 (a run step with finish waits for it).
	Command []string `yaml:"command"`
}

// Step is one entry of the timeline: exactly one of its fields is set.
type Step struct {
	Run     *RunStep     `yaml:"run"`
	Inject  *InjectStep  `yaml:"inject"`
	Clear   *MemberStep  `yaml:"clear"`
	Fail    *MemberStep  `yaml:"fail"`
	Replace *MemberStep  `yaml:"replace"`
	Spare   *SpareStep   `yaml:"spare"`
	Approve *MemberStep  `yaml:"approve"`
	Crash   *CrashStep   `yaml:"crash"`
	Scrub   *ScrubStep   `yaml:"scrub"`
	Wait    *WaitStep    `yaml:"wait"`
	Expect  *ExpectStep  `yaml:"expect"`
	Verify  *VerifyStep  `yaml:"verify"`
	Rebuild *RebuildStep `yaml:"rebuild"`
}

// stepKinds are the names of the steps, as the file spells them.
var stepKinds = []string{"run", "inject", "clear", "fail", "replace", "spare", "approve", "crash", "scrub", "wait", "expect", "verify", "rebuild"}

// RunStep lets the workload do more: Ops more operations, or with Finish
// (for a command workload) run to its end.
type RunStep struct {
	Ops    int  `yaml:"ops"`
	Finish bool `yaml:"finish"`
}

// InjectStep injects a fault into a member's disk.
type InjectStep struct {
	Member            int `yaml:"member"`
	control.FaultSpec `yaml:",inline"`
}

// MemberStep names a member by slot; for clear, no member means all.
type MemberStep struct {
	Member *int `yaml:"member"`
}

// SpareStep adds a fresh hot spare.
type SpareStep struct {
	Add int `yaml:"add"` // how many; default 1
}

// CrashStep kills the mount's daemon with SIGKILL and mounts again.
type CrashStep struct{}

// ScrubStep runs a scrub to its end and checks what it found.
type ScrubStep struct {
	Check    bool   `yaml:"check"`
	Bad      string `yaml:"bad"`      // blocks found bad, e.g. "0" or ">0"
	Repaired string `yaml:"repaired"` // blocks repaired
	Lost     string `yaml:"lost"`     // bytes found beyond redundancy
}

// RebuildStep pauses or resumes rebuilds.
type RebuildStep struct {
	Pause  bool `yaml:"pause"`
	Resume bool `yaml:"resume"`
}

// WaitStep waits until the array or a member is in a state, or for an
// event (of a member, and taking it to a state, if given), or until a
// member's rebuild or resync has done a share of its work: each wait for
// the same event waits for one more than the waits before it.
type WaitStep struct {
	Member  *int          `yaml:"member"`
	State   string        `yaml:"state"`
	Event   string        `yaml:"event"`
	To      string        `yaml:"to"`      // with event: the state it took the member to
	Rebuilt string        `yaml:"rebuilt"` // with member: a percentage, "25%"
	Timeout time.Duration `yaml:"timeout"` // default 60s
}

// ExpectStep checks the array's present state.
type ExpectStep struct {
	State    string          `yaml:"state"`   // the array's
	Members  map[int]string  `yaml:"members"` // slot → state
	Rebuilt  map[int]string  `yaml:"rebuilt"` // slot → comparison with the percentage its rebuild has done
	Counters []CounterExpect `yaml:"counters"`
	Events   []EventExpect   `yaml:"events"`
	Errors   string          `yaml:"errors"` // I/O errors the workload has seen
	Lost     string          `yaml:"lost"`   // bytes recorded lost
	Faults   *int            `yaml:"faults"` // disks with faults in force
}

// CounterExpect checks one member's error counters.
type CounterExpect struct {
	Member   int    `yaml:"member"`
	Read     string `yaml:"read"`
	Write    string `yaml:"write"`
	Checksum string `yaml:"checksum"`
	Repaired string `yaml:"repaired"`
	Slow     string `yaml:"slow"`
}

// EventExpect checks how many events of a kind were recorded since the
// scenario began, for a member or (without one) for any.
type EventExpect struct {
	Kind   string `yaml:"kind"`
	Member *int   `yaml:"member"`
	To     string `yaml:"to"`    // the state it took the member to, if it matters
	Count  string `yaml:"count"` // default ">0"
}

// VerifyStep pauses the workload and reads back everything it wrote.
type VerifyStep struct{}

// kind returns the name of the one step set, or an error.
func (s Step) kind() (string, error) {
	set := []string{}
	for i, p := range []bool{s.Run != nil, s.Inject != nil, s.Clear != nil, s.Fail != nil, s.Replace != nil, s.Spare != nil,
		s.Approve != nil, s.Crash != nil, s.Scrub != nil, s.Wait != nil, s.Expect != nil, s.Verify != nil, s.Rebuild != nil} {
		if p {
			set = append(set, stepKinds[i])
		}
	}
	switch len(set) {
	case 1:
		return set[0], nil
	case 0:
		return "", fmt.Errorf("a step names no action: use one of %s", strings.Join(stepKinds, ", "))
	}
	return "", fmt.Errorf("a step names %s at once: give each its own step (a list entry starting with -)", strings.Join(set, " and "))
}

// ErrScenario is wrapped by every error about a scenario file's contents.
var ErrScenario = errors.New("bad scenario")

// Load reads and checks a scenario file.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	return Parse(path, b)
}

// yamlLine matches the line prefix of yaml's messages.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): `)

// yamlField matches yaml's message for a field not in the type.
var yamlField = regexp.MustCompile(`field (\S+) not found in type chaos\.(\w+)`)

// typeNames says what each decoded type is, for error messages.
var typeNames = map[string]string{
	"Scenario": "the scenario (fields: name, description, array, workload, steps)",
	"Step":     "the steps: no such step (steps: " + strings.Join(stepKinds, ", ") + ")",
	"ArraySpec": "array (fields: layout, members, spares, size, chunk, consistency, read-policy, failure-level, " +
		"health-timeout, auto-failover, rebuild-rate)",
	"WorkloadSpec":  "workload (fields: seed, workers, span, sizes, write, read, flush, command)",
	"RunStep":       "a run step (fields: ops, finish)",
	"InjectStep":    "an inject step (fields: member, fault, ops, rate, range, count, for, delay, jitter, seed)",
	"MemberStep":    "this step (field: member)",
	"SpareStep":     "a spare step (field: add)",
	"CrashStep":     "a crash step (it takes no fields: write crash: {})",
	"ScrubStep":     "a scrub step (fields: check, bad, repaired, lost)",
	"RebuildStep":   "a rebuild step (fields: pause, resume)",
	"WaitStep":      "a wait step (fields: member, state, event, to, rebuilt, timeout)",
	"ExpectStep":    "an expect step (fields: state, members, rebuilt, counters, events, errors, lost, faults)",
	"CounterExpect": "a counters entry (fields: member, read, write, checksum, repaired, slow)",
	"EventExpect":   "an events entry (fields: kind, member, to, count)",
	"VerifyStep":    "a verify step (it takes no fields: write verify: {})",
}

// Parse reads a scenario from its text; path names it in errors, which
// give the line: "path:LINE: what is wrong".
func Parse(path string, text []byte) (*Scenario, error) {
	sc := &Scenario{Path: path}
	dec := yaml.NewDecoder(bytes.NewReader(text))
	dec.KnownFields(true)
	if err := dec.Decode(sc); err != nil {
		return nil, yamlError(path, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(text, &doc); err != nil {
		return nil, yamlError(path, err)
	}
	sc.sections = sectionLines(&doc)
	steps := stepNodes(&doc)
	for i, n := range steps {
		sc.lines = append(sc.lines, n.Line)
		// A step written as "- verify:" has a null value, which leaves its
		// pointer nil: it still names the step.
		if n.Kind == yaml.MappingNode && len(n.Content) == 2 && n.Content[1].Tag == "!!null" && i < len(sc.Steps) {
			setEmpty(&sc.Steps[i], n.Content[0].Value)
		}
	}
	if err := sc.validate(); err != nil {
		return nil, err
	}
	return sc, nil
}

// yamlError turns the YAML library's errors into "path:LINE: message" lines.
func yamlError(path string, err error) error {
	var te *yaml.TypeError
	msgs := []string{err.Error()}
	if errors.As(err, &te) {
		msgs = te.Errors
	}
	for i, m := range msgs {
		line := "1"
		if l := yamlLine.FindStringSubmatch(m); l != nil {
			line, m = l[1], m[len(l[0]):]
		}
		if f := yamlField.FindStringSubmatch(m); f != nil {
			what := typeNames[f[2]]
			if what == "" {
				what = f[2]
			}
			m = fmt.Sprintf("unknown field %q in %s", f[1], what)
			if f[2] == "Step" {
				m = fmt.Sprintf("unknown step %q: use one of %s", f[1], strings.Join(stepKinds, ", "))
			}
		}
		m = strings.TrimPrefix(m, "yaml: ")
		msgs[i] = fmt.Sprintf("%s:%s: %s", path, line, m)
	}
	return fmt.Errorf("%w: %s", ErrScenario, strings.Join(msgs, "; "))
}

// sectionLines returns the line of each top-level field.
func sectionLines(doc *yaml.Node) map[string]int {
	out := map[string]int{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return out
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		out[m.Content[i].Value] = m.Content[i].Line
	}
	return out
}

// line returns the line of a top-level field, or 1.
func (sc *Scenario) line(section string) int {
	if l := sc.sections[section]; l > 0 {
		return l
	}
	return 1
}

// stepNodes returns the nodes of the steps list.
func stepNodes(doc *yaml.Node) []*yaml.Node {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil
	}
	m := doc.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "steps" && m.Content[i+1].Kind == yaml.SequenceNode {
			return m.Content[i+1].Content
		}
	}
	return nil
}

// setEmpty sets the step named kind to its zero value.
func setEmpty(s *Step, kind string) {
	switch kind {
	case "run":
		s.Run = &RunStep{}
	case "inject":
		s.Inject = &InjectStep{}
	case "clear":
		s.Clear = &MemberStep{}
	case "fail":
		s.Fail = &MemberStep{}
	case "replace":
		s.Replace = &MemberStep{}
	case "spare":
		s.Spare = &SpareStep{}
	case "approve":
		s.Approve = &MemberStep{}
	case "crash":
		s.Crash = &CrashStep{}
	case "scrub":
		s.Scrub = &ScrubStep{}
	case "wait":
		s.Wait = &WaitStep{}
	case "expect":
		s.Expect = &ExpectStep{}
	case "verify":
		s.Verify = &VerifyStep{}
	case "rebuild":
		s.Rebuild = &RebuildStep{}
	}
}

// errAt formats an error about a scenario at a line.
func (sc *Scenario) errAt(line int, format string, args ...any) error {
	return fmt.Errorf("%w: %s:%d: %s", ErrScenario, sc.Path, line, fmt.Sprintf(format, args...))
}

// stepLine returns the line of step i, or 1 if unknown.
func (sc *Scenario) stepLine(i int) int {
	if i < len(sc.lines) {
		return sc.lines[i]
	}
	return 1
}

// Member states and array states a scenario may name.
var (
	memberStates = []string{"ONLINE", "FAULTED", "OFFLINE", "REMOVED", "REBUILDING"}
	arrayStates  = []string{raid.ArrayOptimal, raid.ArrayDegraded, raid.ArrayRebuilding, raid.ArraySuspended, raid.ArrayFailed}
)

// validate checks what the YAML decoder cannot: required fields, ranges,
// the names of layouts, states and faults, and each step's fields.
func (sc *Scenario) validate() error {
	a := sc.Array
	if sc.Name == "" {
		return sc.errAt(1, "the scenario has no name: add name: ...")
	}
	if a.Layout == "" || a.Members == 0 || a.Size == "" {
		return sc.errAt(sc.line("array"), "array needs layout, members and size (for example layout: raid5, members: 4, size: 64MiB)")
	}
	if _, err := raid.ParseLayout(a.Layout, a.Members); err != nil {
		return sc.errAt(sc.line("array"), "array: %v", err)
	}
	for _, s := range []string{a.Size, a.Chunk} {
		if _, err := raid.ParseSize(s); s != "" && err != nil {
			return sc.errAt(sc.line("array"), "array: %v", err)
		}
	}
	w := sc.Workload
	if _, err := raid.ParseSize(w.Span); w.Span != "" && err != nil {
		return sc.errAt(sc.line("workload"), "workload span: %v", err)
	}
	for _, s := range w.Sizes {
		n, err := raid.ParseSize(s)
		if err != nil || n <= 0 || n%4096 != 0 || n > 1<<20 {
			return sc.errAt(sc.line("workload"), "workload size %q: give multiples of 4KiB up to 1MiB", s)
		}
	}
	if w.Write < 0 || w.Read < 0 || w.Flush < 0 || w.Workers < 0 {
		return sc.errAt(sc.line("workload"), "workload weights and workers cannot be negative")
	}
	if len(sc.Steps) == 0 {
		return sc.errAt(sc.line("steps"), "the scenario has no steps")
	}
	for i, st := range sc.Steps {
		line := sc.stepLine(i)
		kind, err := st.kind()
		if err != nil {
			return sc.errAt(line, "step %d: %v", i+1, err)
		}
		if err := sc.validateStep(kind, st); err != nil {
			return sc.errAt(line, "step %d (%s): %v", i+1, kind, err)
		}
	}
	return nil
}

// validateStep checks one step's fields.
func (sc *Scenario) validateStep(kind string, st Step) error {
	members := sc.Array.Members
	slot := func(p *int, need bool) error {
		switch {
		case p == nil && need:
			return fmt.Errorf("name a member: member: SLOT")
		case p != nil && (*p < 0 || *p >= members):
			return fmt.Errorf("member %d: the array has slots 0 to %d", *p, members-1)
		}
		return nil
	}
	switch kind {
	case "run":
		if st.Run.Ops <= 0 && !st.Run.Finish {
			return fmt.Errorf("give ops: N (operations to let the workload do) or finish: true")
		}
		if st.Run.Finish && len(sc.Workload.Command) == 0 {
			return fmt.Errorf("finish waits for a workload command, and this scenario has none")
		}
		if st.Run.Ops > 0 && len(sc.Workload.Command) > 0 {
			return fmt.Errorf("ops counts the built-in workload's operations: with a command, use finish: true")
		}
	case "inject":
		if err := slot(&st.Inject.Member, true); err != nil {
			return err
		}
		if _, err := st.Inject.Rule(); err != nil {
			return err
		}
	case "clear":
		return slot(st.Clear.Member, false)
	case "fail":
		return slot(st.Fail.Member, true)
	case "replace":
		return slot(st.Replace.Member, true)
	case "approve":
		return slot(st.Approve.Member, true)
	case "spare":
		if st.Spare.Add < 0 {
			return fmt.Errorf("add %d: give how many spares to add", st.Spare.Add)
		}
	case "scrub":
		for _, c := range []string{st.Scrub.Bad, st.Scrub.Repaired, st.Scrub.Lost} {
			if _, err := parseCmp(c); err != nil {
				return err
			}
		}
	case "rebuild":
		if st.Rebuild.Pause == st.Rebuild.Resume {
			return fmt.Errorf("give pause: true or resume: true")
		}
	case "wait":
		w := st.Wait
		if err := slot(w.Member, false); err != nil {
			return err
		}
		if given := btoi(w.State != "") + btoi(w.Event != "") + btoi(w.Rebuilt != ""); given != 1 {
			return fmt.Errorf("give one of state: STATE, event: KIND or rebuilt: PERCENT")
		}
		if w.Rebuilt != "" {
			if w.Member == nil {
				return fmt.Errorf("rebuilt %q: name the member whose rebuild it is", w.Rebuilt)
			}
			if _, err := parsePercent(w.Rebuilt); err != nil {
				return err
			}
		}
		if w.To != "" && (w.Event == "" || !slices.Contains(memberStates, w.To)) {
			return fmt.Errorf("to %q: give it with event:, as one of %s", w.To, strings.Join(memberStates, ", "))
		}
		if w.State != "" {
			valid := arrayStates
			if w.Member != nil {
				valid = memberStates
			}
			if !slices.Contains(valid, w.State) {
				return fmt.Errorf("state %q: use one of %s", w.State, strings.Join(valid, ", "))
			}
		}
	case "expect":
		e := st.Expect
		if e.State != "" && !slices.Contains(arrayStates, e.State) {
			return fmt.Errorf("state %q: use one of %s", e.State, strings.Join(arrayStates, ", "))
		}
		for s, state := range e.Members {
			if err := slot(&s, true); err != nil {
				return err
			}
			if !slices.Contains(memberStates, state) {
				return fmt.Errorf("member %d state %q: use one of %s", s, state, strings.Join(memberStates, ", "))
			}
		}
		for s, c := range e.Rebuilt {
			if err := slot(&s, true); err != nil {
				return err
			}
			if _, err := parseCmp(c); err != nil {
				return err
			}
		}
		for _, c := range e.Counters {
			if err := slot(&c.Member, true); err != nil {
				return err
			}
			for _, v := range []string{c.Read, c.Write, c.Checksum, c.Repaired, c.Slow} {
				if _, err := parseCmp(v); err != nil {
					return err
				}
			}
		}
		for _, ev := range e.Events {
			if ev.Kind == "" {
				return fmt.Errorf("an events entry needs kind: (fence, restart, failover, rebuild, ...)")
			}
			if err := slot(ev.Member, false); err != nil {
				return err
			}
			if ev.To != "" && !slices.Contains(memberStates, ev.To) {
				return fmt.Errorf("to %q: use one of %s", ev.To, strings.Join(memberStates, ", "))
			}
			if _, err := parseCmp(ev.Count); err != nil {
				return err
			}
		}
		for _, c := range []string{e.Errors, e.Lost} {
			if _, err := parseCmp(c); err != nil {
				return err
			}
		}
	}
	return nil
}

// cmp is a comparison such as ">0", "<=3" or "5".
type cmp struct {
	op string
	n  int64
}

// parseCmp reads a comparison; "" is none (always true).
func parseCmp(s string) (*cmp, error) {
	if s == "" {
		return nil, nil
	}
	t := strings.TrimSpace(s)
	c := &cmp{op: "=="}
	for _, op := range []string{">=", "<=", "==", "!=", ">", "<", "="} {
		if strings.HasPrefix(t, op) {
			c.op, t = op, strings.TrimSpace(t[len(op):])
			break
		}
	}
	if c.op == "=" {
		c.op = "=="
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("comparison %q: write a number, optionally after >, >=, <, <=, == or !=", s)
	}
	c.n = n
	return c, nil
}

// parsePercent reads a percentage, "25%" (or "25"), from 0 to 100.
func parsePercent(s string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(s), "%"), 10, 64)
	if err != nil || n < 0 || n > 100 {
		return 0, fmt.Errorf("rebuilt %q: write a percentage from 0%% to 100%%", s)
	}
	return n, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// holds reports whether v satisfies the comparison.
func (c *cmp) holds(v int64) bool {
	if c == nil {
		return true
	}
	switch c.op {
	case ">=":
		return v >= c.n
	case "<=":
		return v <= c.n
	case ">":
		return v > c.n
	case "<":
		return v < c.n
	case "!=":
		return v != c.n
	}
	return v == c.n
}

func (c *cmp) String() string {
	if c.op == "==" {
		return strconv.FormatInt(c.n, 10)
	}
	return c.op + strconv.FormatInt(c.n, 10)
}

// mustCmp parses a comparison validate has already checked.
func mustCmp(s string) *cmp {
	c, _ := parseCmp(s)
	return c
}
