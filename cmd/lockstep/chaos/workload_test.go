package chaos

import (
	"strings"
	"testing"
)

// TestCheckCatchesWrongData feeds the workload's checker blocks that are
// right, stale, corrupt, misplaced and zero, and checks that it tells them
// apart: the scenarios rest on it to catch wrong data.
func TestCheckCatchesWrongData(t *testing.T) {
	w := newWorkload(WorkloadSpec{Seed: 1}, 2<<20, []int{blockSize})
	block := func(b int64, v uint32) []byte {
		p := make([]byte, blockSize)
		w.fill(p, b, v)
		return p
	}
	w.blocks[5] = blockRecord{live: []uint32{7}, crash: []uint32{3, 7}}
	check := func(what string, p []byte, afterCrash bool, wantWrong int64, wantMsg string) {
		t.Helper()
		before := w.wrong.Load()
		w.firstErr.Store(nil)
		w.check(p, 5*blockSize, afterCrash)
		if got := w.wrong.Load() - before; got != wantWrong {
			t.Fatalf("%s: %d wrong, want %d", what, got, wantWrong)
		}
		if wantMsg != "" && !strings.Contains(*w.firstErr.Load(), wantMsg) {
			t.Fatalf("%s: reported %q, want %q", what, *w.firstErr.Load(), wantMsg)
		}
	}
	check("the version written", block(5, 7), false, 0, "")
	check("an older version", block(5, 3), false, 1, "holds version 3, which is not one it may hold")
	corrupt := block(5, 7)
	corrupt[100] ^= 1
	check("a flipped bit", corrupt, false, 1, "corrupt copy of version 7")
	check("another block's data", block(6, 7), false, 1, "holds block 6's data")
	check("zeros", make([]byte, blockSize), false, 1, "holds version 0")
	junk := make([]byte, blockSize)
	junk[9] = 1
	check("junk", junk, false, 1, "never wrote")

	// After a crash, any version written since the last flush will do,
	// and what is found is what the block holds from then on.
	check("an unflushed version after a crash", block(5, 3), true, 0, "")
	if r := w.blocks[5]; len(r.live) != 1 || r.live[0] != 3 || len(r.crash) != 1 || r.crash[0] != 3 {
		t.Fatalf("after the crash check the record is %+v, want version 3 alone", r)
	}
	check("the lost version after the check", block(5, 7), false, 1, "holds version 7")
}
