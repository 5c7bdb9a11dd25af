package raid

import (
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
)

// TestEventsAreTrimmed: a member keeps only the newest maxEvents events.
func TestEventsAreTrimmed(t *testing.T) {
	bm, err := blockdev.CreateMember(filepath.Join(t.TempDir(), "m"), 1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer bm.Close()
	b := bm.Meta.NewBatch()
	for i := range maxEvents + 100 {
		e := Event{Time: time.Unix(int64(i), 0), Slot: 0, Kind: "note", Reason: "x"}
		val, _ := json.Marshal(e)
		b.Set(eventKey(e, uint32(i)), val)
	}
	if err := b.Commit(true); err != nil {
		t.Fatal(err)
	}
	m := &member{m: bm}
	for range 2 { // the second load sees what the first one kept
		evs, err := m.loadEvents()
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != maxEvents || evs[0].Time.Unix() != 100 || evs[len(evs)-1].Time.Unix() != maxEvents+99 {
			t.Fatalf("loaded %d events, from %v to %v; want the newest %d", len(evs), evs[0].Time, evs[len(evs)-1].Time, maxEvents)
		}
	}
}
