package chaos

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

const good = `name: t
array: {layout: raid5, members: 4, size: 32MiB}
workload: {seed: 1}
steps:
  - run: {ops: 10}
  - inject: {member: 1, fault: error, ops: read, rate: 0.5, for: 2s}
  - verify:
  - crash: {}
  - expect:
      state: OPTIMAL
      members: {1: ONLINE}
      counters: [{member: 1, read: ">0"}]
      events: [{kind: fence, member: 1, count: 0}]
      errors: 0
`

func TestParseReadsAScenario(t *testing.T) {
	sc, err := Parse("good.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Steps) != 5 || sc.Steps[2].Verify == nil || sc.Steps[3].Crash == nil {
		t.Fatalf("steps %+v: want five, the third a verify written with no value", sc.Steps)
	}
	if got := sc.stepLine(1); got != 6 {
		t.Fatalf("the inject step is on line %d, want 6", got)
	}
	in := sc.Steps[1].Inject
	if r, err := in.Rule(); err != nil || r.String() != "error reads blocks 0-end p 0.5 for 2s" || in.Member != 1 {
		t.Fatalf("inject step: %+v, rule %v, %v", in, r, err)
	}
	if e := sc.Steps[4].Expect; e.Members[1] != "ONLINE" || e.Counters[0].Read != ">0" || e.Events[0].Count != "0" {
		t.Fatalf("expect step: %+v", e)
	}
}

// TestParseRefusesBadScenarios checks that each mistake is refused with
// the file, the line and what is wrong.
func TestParseRefusesBadScenarios(t *testing.T) {
	head := "name: t\narray: {layout: raid5, members: 4, size: 32MiB}\nsteps:\n"
	for _, c := range []struct {
		name, text, want string
	}{
		{"unknown step", head + "  - run: {ops: 1}\n  - explode: {}\n", `bad.yaml:5: unknown step "explode": use one of run, inject`},
		{"unknown field", head + "  - wait: {state: OPTIMAL, when: soon}\n", `bad.yaml:4: unknown field "when" in a wait step (fields: member, state, event, to, rebuilt, timeout)`},
		{"unknown top-level field", "name: t\nlayout: raid5\n", `bad.yaml:2: unknown field "layout" in the scenario`},
		{"bad type", head + "  - run: {ops: many}\n", `bad.yaml:4: cannot unmarshal !!str ` + "`many`"},
		{"bad duration", head + "  - wait: {state: OPTIMAL, timeout: forever}\n", `bad.yaml:4:`},
		{"two steps in one", head + "  - {run: {ops: 1}, crash: {}}\n", `bad.yaml:4: step 1: a step names run and crash at once`},
		{"empty step", head + "  - {}\n", `bad.yaml:4: step 1: a step names no action`},
		{"bad fault", head + "  - inject: {member: 1, fault: melt}\n", `bad.yaml:4: step 1 (inject): unknown fault "melt"`},
		{"bad member", head + "  - fail: {member: 7}\n", `bad.yaml:4: step 1 (fail): member 7: the array has slots 0 to 3`},
		{"no member", head + "  - fail: {}\n", `bad.yaml:4: step 1 (fail): name a member`},
		{"bad state", head + "  - wait: {state: HAPPY}\n", `bad.yaml:4: step 1 (wait): state "HAPPY": use one of OPTIMAL`},
		{"bad comparison", head + "  - expect: {errors: lots}\n", `bad.yaml:4: step 1 (expect): comparison "lots"`},
		{"two waits in one", head + "  - wait: {state: OPTIMAL, event: fence}\n", `step 1 (wait): give one of state: STATE, event: KIND or rebuilt: PERCENT`},
		{"rebuilt without a member", head + "  - wait: {rebuilt: 50%}\n", `step 1 (wait): rebuilt "50%": name the member whose rebuild it is`},
		{"bad percentage", head + "  - wait: {member: 1, rebuilt: 150%}\n", `step 1 (wait): rebuilt "150%": write a percentage from 0% to 100%`},
		{"bad rebuilt comparison", head + "  - expect: {rebuilt: {1: most}}\n", `step 1 (expect): comparison "most"`},
		{"bad layout", "name: t\narray: {layout: raid7, members: 4, size: 32MiB}\nsteps: [{run: {ops: 1}}]\n", `bad.yaml:2: array: invalid layout: "raid7"`},
		{"no steps", "name: t\narray: {layout: raid5, members: 4, size: 32MiB}\n", `bad.yaml:1: the scenario has no steps`},
		{"finish without a command", head + "  - run: {finish: true}\n", `step 1 (run): finish waits for a workload command`},
		{"bad range", head + "  - inject: {member: 0, fault: error, range: 5:4096}\n", `step 1 (inject): fault range "5:4096"`},
		{"not yaml", "name: [t\n", `bad.yaml:1:`},
		{"bad workload size", "name: t\narray: {layout: raid5, members: 4, size: 32MiB}\nworkload: {sizes: [3KiB]}\nsteps: [{run: {ops: 1}}]\n", `bad.yaml:3: workload size "3KiB"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(c.text))
			if err == nil || !errors.Is(err, ErrScenario) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v\nwant one containing %q", err, c.want)
			}
			t.Log(err)
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error spans lines: %q", err)
			}
		})
	}
}

// TestTheScenariosParse loads every scenario make test runs.
func TestTheScenariosParse(t *testing.T) {
	paths, err := filepath.Glob("../../../testdata/scenarios/*.yaml")
	if err != nil || len(paths) < 15 {
		t.Fatalf("%d scenarios found (%v), want at least 15", len(paths), err)
	}
	kinds := map[string]bool{}
	layouts := map[string]bool{}
	for _, p := range paths {
		sc, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		layouts[sc.Array.Layout] = true
		for _, st := range sc.Steps {
			if st.Inject != nil {
				kinds[st.Inject.Fault] = true
			}
		}
	}
	for _, k := range []string{"error", "flip", "rogue", "delay", "stall", "rot", "torn", "vanish", "full"} {
		if !kinds[k] {
			t.Errorf("no scenario injects %s", k)
		}
	}
	for _, l := range []string{"raid1", "mirror:3", "raid5", "raid6", "raid10"} {
		if !layouts[l] {
			t.Errorf("no scenario runs %s", l)
		}
	}
}

func TestComparisons(t *testing.T) {
	for s, cases := range map[string]map[int64]bool{
		">0": {0: false, 1: true}, "0": {0: true, 1: false}, "<=3": {3: true, 4: false},
		"!=2": {2: false, 5: true}, "= 4": {4: true}, ">=1": {0: false, 1: true}, "<2": {1: true, 2: false},
	} {
		c, err := parseCmp(s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		for v, want := range cases {
			if c.holds(v) != want {
				t.Errorf("%q holds(%d) = %v", s, v, !want)
			}
		}
	}
}
