package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestChaosScenarios runs every scenario in testdata/scenarios in its short
// form, as make test promises, through lockstep chaos run.
func TestChaosScenarios(t *testing.T) {
	e := newEnv(t, "fio")
	paths, err := filepath.Glob("../../testdata/scenarios/*.yaml")
	if err != nil || len(paths) < 15 {
		t.Fatalf("%d scenarios (%v), want at least 15", len(paths), err)
	}
	for _, p := range paths {
		t.Run(strings.TrimSuffix(filepath.Base(p), ".yaml"), func(t *testing.T) {
			out, err := e.try("chaos", "run", "--work-dir", filepath.Join(e.root, "chaos"), p)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "PASSED") || strings.Contains(out, "FAILED") {
				t.Fatalf("the report does not say it passed:\n%s", out)
			}
			t.Log("\n" + out)
		})
	}
}

// TestChaosRunnerCanFail proves the runner fails: a scenario whose
// expectation is wrong (the array is DEGRADED after a fail, not OPTIMAL)
// makes it exit non-zero, naming the step and its line, and run nothing
// after it. A scenario file with a mistake is refused before anything runs.
func TestChaosRunnerCanFail(t *testing.T) {
	e := newEnv(t)
	wrong := filepath.Join(e.root, "wrong.yaml")
	err := os.WriteFile(wrong, []byte(`name: wrong-expectation
array: {layout: raid5, members: 3, size: 16MiB}
steps:
  - run: {ops: 50}
  - fail: {member: 1}
  - expect: {state: OPTIMAL}
  - verify: {}
`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.try("chaos", "run", "--work-dir", filepath.Join(e.root, "chaos"), wrong)
	if err == nil || !strings.Contains(err.Error(), "1 of 1 scenario(s) failed: wrong-expectation") {
		t.Fatalf("a wrong expectation: exit %v\n%s", err, out)
	}
	for _, want := range []string{"FAILED (" + wrong + ":6): expectation not met: array OPTIMAL: got DEGRADED",
		"1 later step(s) not run", "FAILED: 2/4 steps passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("the report does not say %q:\n%s", want, out)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(e.root, "run", "*.sock")); len(left) != 0 {
		t.Errorf("the failed scenario left a mount behind: %v", left)
	}

	bad := filepath.Join(e.root, "bad.yaml")
	os.WriteFile(bad, []byte("name: bad\narray: {layout: raid5, members: 3, size: 16MiB}\nsteps:\n  - explode: {}\n"), 0o600)
	out, err = e.try("chaos", "run", "--work-dir", filepath.Join(e.root, "chaos2"), wrong, bad)
	if err == nil || !strings.Contains(err.Error(), bad+`:4: unknown step "explode"`) || out != "" {
		t.Fatalf("a bad scenario file: exit %v, output %q", err, out)
	}
}
