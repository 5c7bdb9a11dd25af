package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

func TestInjectWhileFioVerifies(t *testing.T) {
	e := newEnv(t, "fio")
	var dirs []string
	for i := range 6 {
		dirs = append(dirs, filepath.Join(e.root, fmt.Sprintf("disk%d", i)))
	}
	spare := filepath.Join(e.root, "spare")
	e.run(append([]string{"create", "--layout", "raid6", "--chunk", "64KiB", "--size", "192MiB", "--spare", spare}, dirs...)...)
	mnt := e.mount(dirs, "--metrics", "127.0.0.1:0", "--failure-level", "3", "--health-timeout", "3s", "--rebuild-rate", "64MiB:1GiB")
	st := e.status(mnt)
	wait := startFio(t, mnt, "128M")

	// Two faults within raid6's redundancy while fio writes: member 1's
	// disk vanishes, and member 4's reads come back with flipped bits.
	waitMetric(t, st.Mount.Metrics, `lockstep_request_bytes_total{op="write"}`, 32<<20)
	if out := e.run("inject", mnt, "1", "--fault", "vanish"); !strings.Contains(out, "injected into member 1: vanish") {
		t.Fatalf("inject vanish: %s", out)
	}
	e.run("inject", mnt, dirs[4], "--fault", "flip", "--rate", "0.05", "--seed", "9")
	st = e.status(mnt)
	// Member 1's disk may already have been replaced by the spare: its
	// faults are listed by directory.
	if len(st.Faults) != 2 || st.Faults[0].Dir != dirs[1] || !st.Faults[0].Vanished ||
		st.Faults[1].Slot != 4 || st.Faults[1].Rules[0].Rule.Kind.String() != "flip" {
		t.Fatalf("status shows faults %+v, want vanish on disk 1 and flip on 4", st.Faults)
	}
	if out := e.run("status", mnt); !strings.Contains(out, "member 4 ("+dirs[4]+"): flip reads blocks 0-end p 0.05") {
		t.Fatalf("status does not show the flip:\n%s", out)
	}

	j := wait().Jobs[0]
	if j.Error != 0 || j.Write.IOBytes != 128<<20 || j.Read.IOBytes != 128<<20 {
		t.Fatalf("fio: error %d, wrote %d and verified %d bytes, want 0 and 128 MiB each", j.Error, j.Write.IOBytes, j.Read.IOBytes)
	}

	// The response: member 1 fenced and rebuilt onto the spare; member 4's
	// bad blocks caught by their checksums and repaired.
	st = e.waitFor(mnt, "the rebuild onto the spare", func(st control.Status) bool {
		return st.Array.State == raid.ArrayOptimal && st.Array.Members[1].Dir == spare
	})
	if c := st.Array.Members[4].Counters; c.ChecksumErrors == 0 || c.Repairs == 0 {
		t.Errorf("member 4 under flips: counters %+v, want checksum errors repaired", c)
	}
	events := e.run("events", mnt)
	for _, want := range []string{"member 1 inject", "member 1 fence ONLINE -> FAULTED", "member 1 failover FAULTED -> REBUILDING",
		"member 1 rebuild REBUILDING -> ONLINE", "member 4 inject"} {
		if !strings.Contains(events, want) {
			t.Errorf("events do not show %q:\n%s", want, events)
		}
	}

	// Clearing ends the faults; status shows none.
	if out := e.run("inject", "clear", mnt); !strings.Contains(out, "faults cleared on every member") {
		t.Fatalf("inject clear: %s", out)
	}
	if st := e.status(mnt); len(st.Faults) != 0 {
		t.Fatalf("faults after clear: %+v", st.Faults)
	}
	if !strings.Contains(e.run("events", mnt), "member 4 inject-clear") {
		t.Error("events do not show the clear")
	}
	// Bad input changes nothing.
	for _, bad := range [][]string{
		{"inject", mnt, "2", "--fault", "melt"},
		{"inject", mnt, "2"},
		{"inject", mnt, "2", "--fault", "error", "--rate", "2"},
		{"inject", mnt, "2", "--fault", "error", "--range", "5:4096"},
		{"inject", mnt, "9", "--fault", "error"},
	} {
		if _, err := e.try(bad...); err == nil {
			t.Errorf("%v was accepted", bad)
		}
	}
	if st := e.status(mnt); len(st.Faults) != 0 {
		t.Fatalf("refused injections left faults: %+v", st.Faults)
	}
}
