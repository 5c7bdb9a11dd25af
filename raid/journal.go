package raid

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/lockstepfs/lockstep/blockdev"
)

// ConsistencyJournal logs every write that leaves a parity stripe open to
// the write hole (a partial-stripe write, or any write while the array is
// degraded) durably in the members' metadata, with the parity it computed,
// before writing it; after a crash the log is replayed (rolled forward), so
// a stripe is never left with parity that disagrees with its data, even
// when a member is missing. It also keeps the bitmap's write-intent log,
// for the full-stripe writes it does not journal.
const ConsistencyJournal Consistency = "journal"

// prefixJournal keys the journal's entries by sequence number.
var prefixJournal = []byte("jnl/")

func journalKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefixJournal...), seq)
}

// journal is the write journal of a parity volume.
type journal struct {
	v       *Volume
	enabled bool

	mu      sync.Mutex
	seq     uint64   // the last sequence number used
	applied []uint64 // entries written to the members, to drop at the next flush
}

func newJournal(v *Volume, c Consistency) *journal {
	return &journal{v: v, enabled: c == ConsistencyJournal && v.geo.Parity > 0}
}

// needs reports whether a planned stripe write must be journaled: it does
// not cover the whole stripe, or a member of the stripe would not be taken
// to hold it after a crash: one not taking writes (its chunk would be
// reconstructed from the others), or one whose rebuild has passed the
// stripe since its last checkpoint (a crash puts its cursor back, and
// recovery could then make nothing of the stripe's parity).
func (j *journal) needs(w stripeWrite) bool {
	if !j.enabled {
		return false
	}
	g := j.v.geo
	var n int64
	for _, sp := range w.spans {
		n += int64(len(sp.buf))
	}
	if n < g.stripeData() {
		return true
	}
	for i := range g.Members {
		if !j.v.holdsDurably(g.Slot(w.s, i), w.s) {
			return true
		}
	}
	return false
}

// log records the member writes durably in every member that takes writes
// and returns the entry's sequence number.
func (j *journal) log(ios []memIO) (uint64, error) {
	j.mu.Lock()
	j.seq++
	seq := j.seq
	j.mu.Unlock()
	val := encodeEntry(ios)
	err := j.v.commitAll("journal a write", true, func(b *blockdev.Batch) { b.Set(journalKey(seq), val) })
	return seq, err
}

// done notes that an entry's writes reached the members; the entry is
// dropped once a flush has made them durable.
func (j *journal) done(seq uint64) {
	j.mu.Lock()
	j.applied = append(j.applied, seq)
	j.mu.Unlock()
}

// flushed drops the entries whose writes a flush made durable: those done
// before it began (taken by flushBegun).
func (j *journal) flushed(done []uint64) {
	if len(done) == 0 {
		return
	}
	// Synced: an entry that outlived its drop would be replayed over
	// writes flushed after it, putting older data back.
	err := j.v.commitAll("drop journal entries", true, func(b *blockdev.Batch) {
		for _, seq := range done {
			b.Delete(journalKey(seq))
		}
	})
	if err != nil {
		j.v.log.Warn("journal entries not dropped; they are replayed after a crash", "err", err)
	}
}

// flushBegun takes the entries done so far: a flush that begins now makes
// their writes durable.
func (j *journal) flushBegun() []uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	done := j.applied
	j.applied = nil
	return done
}

// Entry encoding: for each member write, slot (2 bytes), member offset (8)
// and length (4), then the bytes.
func encodeEntry(ios []memIO) []byte {
	var out []byte
	for _, io := range ios {
		out = binary.BigEndian.AppendUint16(out, uint16(io.slot))
		out = binary.BigEndian.AppendUint64(out, uint64(io.off))
		out = binary.BigEndian.AppendUint32(out, uint32(len(io.buf)))
		out = append(out, io.buf...)
	}
	return out
}

var errBadEntry = errors.New("corrupt journal entry")

func decodeEntry(b []byte) ([]memIO, error) {
	var ios []memIO
	for len(b) > 0 {
		if len(b) < 14 {
			return nil, errBadEntry
		}
		slot, off, n := int(binary.BigEndian.Uint16(b)), int64(binary.BigEndian.Uint64(b[2:])), int(binary.BigEndian.Uint32(b[10:]))
		b = b[14:]
		if n > len(b) || n%bs != 0 || off%bs != 0 {
			return nil, errBadEntry
		}
		ios = append(ios, memIO{slot: slot, off: off, buf: b[:n]})
		b = b[n:]
	}
	return ios, nil
}

// replay rolls the journal forward after a crash: every entry found in any
// member is written again, in order, to the members present, and the
// entries are dropped once that is flushed. It returns how many it replayed.
func (j *journal) replay() (int, error) {
	entries := map[uint64][]byte{}
	for _, m := range j.v.members {
		if m == nil {
			continue
		}
		err := m.m.Meta.Scan(prefixJournal, func(k, val []byte) error {
			if len(k) == len(prefixJournal)+8 {
				entries[binary.BigEndian.Uint64(k[len(prefixJournal):])] = append([]byte(nil), val...)
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("member %d journal: %w", m.slot, err)
		}
	}
	seqs := make([]uint64, 0, len(entries))
	for seq := range entries {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		ios, err := decodeEntry(entries[seq])
		if err != nil {
			return 0, fmt.Errorf("journal entry %d: %w", seq, err)
		}
		for _, io := range ios {
			if io.slot >= len(j.v.members) || j.v.members[io.slot] == nil || !j.v.members[io.slot].writable.Load() {
				continue // a missing member gets it from rebuild
			}
			if err := j.v.rewrite(io.slot, io.off, io.buf); err != nil {
				return 0, fmt.Errorf("replay journal entry %d: %w", seq, err)
			}
		}
	}
	if len(seqs) > 0 {
		j.seq = seqs[len(seqs)-1]
	}
	j.applied = seqs
	return len(seqs), nil
}
