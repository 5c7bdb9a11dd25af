package raid

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPolicy(t *testing.T, layout string, members int, edit func(*PolicyConfig)) *Policy {
	t.Helper()
	l, err := ParseLayout(layout, members)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultPolicy()
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return NewPolicy(cfg, l, make([]MemberState, members))
}

// raise feeds the policy what it takes for condition c to cross its
// threshold on a member, one second apart from now, and returns every action.
func raise(p *Policy, slot int, c Condition, now time.Time) []Action {
	var out []Action
	switch c {
	case CondGone:
		out = p.Probe(slot, true, true, now)
	case CondUnresponsive:
		out = p.Probe(slot, false, false, now)
	case CondIOErrors:
		for i := range p.cfg.IOErrors.Count {
			out = append(out, p.IOError(slot, now.Add(time.Duration(i)*time.Second))...)
		}
	case CondMismatches:
		for i := range p.cfg.Mismatches.Count {
			out = append(out, p.Mismatch(slot, now.Add(time.Duration(i)*time.Second))...)
		}
	case CondSlow:
		for i := range p.cfg.SlowIOs.Count {
			out = append(out, p.SlowIO(slot, now.Add(time.Duration(i)*time.Millisecond))...)
		}
	}
	return out
}

func kinds(as []Action) string {
	var k []string
	for _, a := range as {
		k = append(k, a.Kind.String())
	}
	return strings.Join(k, ",")
}

// TestLevelsTable shows what each condition leads to at each failure level,
// for one member of a healthy mirror:3.
func TestLevelsTable(t *testing.T) {
	conds := []Condition{CondGone, CondUnresponsive, CondIOErrors, CondMismatches, CondSlow}
	var b strings.Builder
	for level := 0; level <= 5; level++ {
		fmt.Fprintf(&b, "level %d:", level)
		for _, c := range conds {
			p := testPolicy(t, "mirror:3", 3, func(c *PolicyConfig) { c.FailureLevel = level })
			fmt.Fprintf(&b, " %s=%s", strings.ReplaceAll(c.String(), " ", "-"), kinds(raise(p, 0, c, t0)))
		}
		b.WriteString("\n")
	}
	want := `level 0: gone=down unresponsive=down I/O-errors=note checksum-mismatches=note persistently-slow=sit-out
level 1: gone=restart unresponsive=down I/O-errors=note checksum-mismatches=note persistently-slow=sit-out
level 2: gone=restart unresponsive=restart I/O-errors=note checksum-mismatches=note persistently-slow=sit-out
level 3: gone=restart unresponsive=restart I/O-errors=restart checksum-mismatches=note persistently-slow=sit-out
level 4: gone=restart unresponsive=restart I/O-errors=restart checksum-mismatches=restart persistently-slow=sit-out
level 5: gone=restart unresponsive=restart I/O-errors=restart checksum-mismatches=restart persistently-slow=restart
`
	if got := b.String(); got != want {
		t.Fatalf("levels table:\n%s\nwant:\n%s", got, want)
	}
}

func TestRestartThenFenceOnRepeat(t *testing.T) {
	p := testPolicy(t, "raid6", 4, func(c *PolicyConfig) { c.Restarts = Threshold{Count: 1, Window: time.Hour} })
	if got := kinds(raise(p, 2, CondIOErrors, t0)); got != "restart" {
		t.Fatalf("first failure: %s, want restart", got)
	}
	if p.ReadsAllowed(2, t0) {
		t.Fatal("a restarting member takes reads")
	}
	if got := kinds(p.Restarted(2, true, "", t0.Add(time.Minute))); got != "note" || p.State(2) != Online {
		t.Fatalf("restart ok: %s, state %s", got, p.State(2))
	}
	// The restart cleared the errors: a few more do not trip it again.
	if got := p.IOError(2, t0.Add(2*time.Minute)); got != nil {
		t.Fatalf("one error after a restart: %v", got)
	}
	if got := kinds(raise(p, 2, CondIOErrors, t0.Add(3*time.Minute))); got != "fence,failover" || p.State(2) != Faulted {
		t.Fatalf("repeat within the restart window: %s, state %s; want fence,failover", got, p.State(2))
	}
	// Once fenced, nothing more happens to it.
	if got := raise(p, 2, CondIOErrors, t0.Add(4*time.Minute)); got != nil {
		t.Fatalf("a fenced member raised %v", got)
	}
	// After the restart window a new member gets its restart again.
	if got := kinds(raise(p, 0, CondIOErrors, t0.Add(2*time.Hour))); got != "restart" {
		t.Fatalf("another member: %s", got)
	}
	if got := kinds(p.Restarted(0, false, "label unreadable", t0.Add(2*time.Hour))); got != "fence,failover" {
		t.Fatalf("failed restart: %s, want fence,failover", got)
	}
}

func TestQuorumGuard(t *testing.T) {
	p := testPolicy(t, "raid1", 2, func(c *PolicyConfig) { c.Restarts.Count = 1 })
	if _, err := p.OperatorFail(0, t0); err != nil {
		t.Fatalf("failing one copy of two: %v", err)
	}
	if _, err := p.OperatorFail(1, t0); !errors.Is(err, ErrQuorum) {
		t.Fatalf("failing the last copy = %v, want ErrQuorum", err)
	}
	if _, err := p.OperatorFail(0, t0); err == nil {
		t.Fatal("failing a FAULTED member again succeeded")
	}
	// The last copy crossing the error threshold is restarted, then kept.
	raise(p, 1, CondIOErrors, t0.Add(2*time.Hour))
	acts := p.Restarted(1, false, "still failing", t0.Add(2*time.Hour))
	if len(acts) != 1 || acts[0].Kind != ActNote || !strings.Contains(acts[0].Reason, "not fenced") || p.State(1) != Online {
		t.Fatalf("last copy: %v, state %s", acts, p.State(1))
	}
}

func TestSuspendAndResume(t *testing.T) {
	// Level 1 does not fail unresponsive members: they are kept, and the
	// volume suspends when too few answer.
	p := testPolicy(t, "raid5", 3, func(c *PolicyConfig) { c.FailureLevel = 1 })
	if got := kinds(p.Probe(0, false, false, t0)); got != "down" || p.Suspended() {
		t.Fatalf("first unresponsive member: %s, suspended %v", got, p.Suspended())
	}
	if got := kinds(p.Probe(1, false, false, t0)); got != "down,suspend" || !p.Suspended() {
		t.Fatalf("second unresponsive member of raid5: %s, suspended %v", got, p.Suspended())
	}
	// Back while the volume refused writes: it missed nothing.
	if got := kinds(p.Probe(1, true, false, t0.Add(time.Second))); got != "note,resume" || p.Suspended() || p.State(1) != Online {
		t.Fatalf("member back: %s, suspended %v, state %s", got, p.Suspended(), p.State(1))
	}
	// Back after the others served without it: it is resynced.
	if got := kinds(p.Probe(0, true, false, t0.Add(2*time.Second))); got != "resync" || p.State(0) != Rebuilding {
		t.Fatalf("member back after missing writes: %s, state %s", got, p.State(0))
	}
	// At level 2 an unresponsive member that cannot be fenced (the array
	// needs it) suspends the volume after its restart fails.
	p = testPolicy(t, "raid1", 2, nil)
	p.OperatorFail(0, t0)
	if got := kinds(p.Probe(1, false, false, t0)); got != "restart" {
		t.Fatalf("unresponsive last copy: %s", got)
	}
	if got := kinds(p.Restarted(1, false, "timed out", t0)); got != "note,down,suspend" || !p.Suspended() {
		t.Fatalf("failed restart of the last copy: %s, suspended %v", got, p.Suspended())
	}
	if got := kinds(p.Probe(1, true, false, t0.Add(time.Minute))); got != "note,resume" {
		t.Fatalf("last copy back: %s", got)
	}
}

func TestOperatorOffline(t *testing.T) {
	p := testPolicy(t, "raid5", 3, nil)
	acts, err := p.OperatorOffline(1)
	if err != nil || kinds(acts) != "offline" || p.State(1) != Offline || p.ReadsAllowed(1, t0) {
		t.Fatalf("offline: %v, %v, state %s", acts, err, p.State(1))
	}
	if _, err := p.OperatorOffline(0); !errors.Is(err, ErrQuorum) {
		t.Fatalf("a second member of raid5 offline = %v, want ErrQuorum", err)
	}
	// Conditions on an OFFLINE member lead nowhere.
	if got := raise(p, 1, CondIOErrors, t0); got != nil {
		t.Fatalf("errors on an offline member: %v", got)
	}
}

func TestApprovalWhenAutoFailoverIsOff(t *testing.T) {
	p := testPolicy(t, "raid6", 4, func(c *PolicyConfig) { c.AutoFailover = false; c.Restarts.Count = 1 })
	if _, err := p.Approve(1); err == nil {
		t.Fatal("approved a member that is not waiting")
	}
	acts, err := p.OperatorFail(1, t0)
	if err != nil || kinds(acts) != "fence,note" || !strings.Contains(acts[1].Reason, "approval") {
		t.Fatalf("fail with auto-failover off: %v, %v", acts, err)
	}
	acts, err = p.Approve(1)
	if err != nil || kinds(acts) != "failover" {
		t.Fatalf("approve: %v, %v", acts, err)
	}
	if _, err := p.Approve(1); err == nil {
		t.Fatal("approved twice")
	}
}

func TestCorrelatedFailuresAreNotMassFenced(t *testing.T) {
	p := testPolicy(t, "raid6", 6, func(c *PolicyConfig) { c.Restarts.Count = 1 })
	// The first member fails and is restarted; a second member fails within
	// the correlation window: it is kept.
	if got := kinds(raise(p, 0, CondIOErrors, t0)); got != "restart" {
		t.Fatalf("first: %s", got)
	}
	acts := raise(p, 3, CondIOErrors, t0.Add(5*time.Second))
	if kinds(acts) != "note" || !strings.Contains(acts[0].Reason, "shared fault") || p.State(3) != Online {
		t.Fatalf("second within the window: %v, state %s", acts, p.State(3))
	}
	// An unresponsive member in a correlated burst is kept and marked down.
	acts = p.Probe(4, false, false, t0.Add(10*time.Second))
	if kinds(acts) != "note,down" || p.ReadsAllowed(4, t0.Add(10*time.Second)) {
		t.Fatalf("third, unresponsive: %v", acts)
	}
	// Long after, a lone failure is handled as usual again.
	if got := kinds(raise(p, 5, CondIOErrors, t0.Add(time.Hour))); got != "restart" {
		t.Fatalf("a lone failure later: %s", got)
	}
}

func TestSlowMemberSitsOut(t *testing.T) {
	p := testPolicy(t, "raid1", 2, nil)
	acts := raise(p, 1, CondSlow, t0)
	if kinds(acts) != "sit-out" || p.ReadsAllowed(1, t0.Add(time.Second)) || p.State(1) != Online {
		t.Fatalf("slow member: %v", acts)
	}
	if got := p.Tick(t0.Add(30 * time.Second)); got != nil {
		t.Fatalf("tick during the sit-out: %v", got)
	}
	if got := kinds(p.Tick(t0.Add(2 * time.Minute))); got != "rejoin" || !p.ReadsAllowed(1, t0.Add(2*time.Minute)) {
		t.Fatalf("after the sit-out: %s", got)
	}
}

func TestSlowLastCopyDoesNotSitOut(t *testing.T) {
	p := testPolicy(t, "raid1", 2, nil)
	p.OperatorFail(1, t0)
	acts := raise(p, 0, CondSlow, t0)
	if kinds(acts) != "note" || !p.ReadsAllowed(0, t0.Add(time.Second)) {
		t.Fatalf("slow last copy: %v", acts)
	}
	p = testPolicy(t, "raid0", 2, nil)
	if acts := raise(p, 1, CondSlow, t0); kinds(acts) != "note" {
		t.Fatalf("slow raid0 member: %v", acts)
	}
}

func TestPolicyConfigValidate(t *testing.T) {
	for _, edit := range []func(*PolicyConfig){
		func(c *PolicyConfig) { c.FailureLevel = 6 },
		func(c *PolicyConfig) { c.HealthTimeout = 0 },
		func(c *PolicyConfig) { c.IOErrors.Count = 0 },
		func(c *PolicyConfig) { c.Restarts.Window = -time.Second },
	} {
		c := DefaultPolicy()
		edit(&c)
		if c.Validate() == nil {
			t.Errorf("%+v validated", c)
		}
	}
}

// TestUncountedConditionsAreNotedOncePerWindow: past the threshold, errors
// that the failure level does not count are noted once per error window,
// not once per error.
func TestUncountedConditionsAreNotedOncePerWindow(t *testing.T) {
	p := testPolicy(t, "raid5", 4, func(c *PolicyConfig) { c.FailureLevel = 2 })
	var notes int
	for i := range 100 {
		notes += len(p.IOError(1, t0.Add(time.Duration(i)*time.Second)))
	}
	if notes != 1 {
		t.Fatalf("%d notes for 100 uncounted I/O errors within a window, want 1", notes)
	}
	later := t0.Add(p.cfg.IOErrors.Window + time.Hour)
	var as []Action
	for i := range p.cfg.IOErrors.Count {
		as = append(as, p.IOError(1, later.Add(time.Duration(i)*time.Second))...)
	}
	if kinds(as) != "note" {
		t.Fatalf("a window later: actions %q, want one note", kinds(as))
	}
}
