package scrub_test

import (
	"flag"
	"os"
	"testing"

	"github.com/lockstepfs/lockstep/raid"
)

// TestMain runs benchmarks with the GOMAXPROCS that lockstep mount uses
// (raid.Procs), so that their figures are the mount's; tests run with the
// runtime's default.
func TestMain(m *testing.M) {
	flag.Parse()
	if b := flag.Lookup("test.bench"); b != nil && b.Value.String() != "" {
		raid.UseProcs()
	}
	os.Exit(m.Run())
}
