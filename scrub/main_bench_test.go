package scrub_test

import (
	"testing"

	"github.com/lockstepfs/lockstep/raid/raidtest"
)

func TestMain(m *testing.M) { raidtest.Main(m) }
