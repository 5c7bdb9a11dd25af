package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cockroachdb/pebble"
)

// Keys of the records a member's metadata holds. Each kind of record has its
// own prefix so that it can be scanned alone.
var (
	keyLabel     = []byte("label")
	prefixChecks = []byte("sum/")
)

// Meta is a member's metadata database (pebble). It is safe for concurrent
// use.
type Meta struct {
	db       *pebble.DB
	readOnly bool
}

// quietLogger drops pebble's informational chatter and keeps its fatal errors.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}
func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
	os.Exit(1)
}

// OpenMeta opens the metadata database in dir. With create it makes a new
// one and fails if one exists; with readOnly it opens an existing one without
// writing to it (for offline status while nothing else has it open).
func OpenMeta(dir string, create, readOnly bool) (*Meta, error) {
	exists := true
	if _, err := os.Stat(filepath.Join(dir, "CURRENT")); errors.Is(err, os.ErrNotExist) {
		exists = false
	}
	switch {
	case create && exists:
		return nil, fmt.Errorf("metadata in %s: %w", dir, ErrAlreadyMember)
	case !create && !exists:
		return nil, fmt.Errorf("no metadata in %s: %w", dir, ErrNotMember)
	}
	opts := &pebble.Options{
		ErrorIfExists:    create,
		ErrorIfNotExists: !create,
		ReadOnly:         readOnly,
		Logger:           quietLogger{},
		MemTableSize:     4 << 20,
		Cache:            pebble.NewCache(4 << 20),
	}
	defer opts.Cache.Unref()
	db, err := pebble.Open(dir, opts)
	if err != nil && strings.Contains(err.Error(), "lock held") {
		return nil, fmt.Errorf("metadata in %s: %w", dir, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("open metadata in %s: %w", dir, err)
	}
	return &Meta{db: db, readOnly: readOnly}, nil
}

// Get returns a copy of the value stored at key, or ok=false if there is none.
func (m *Meta) Get(key []byte) (val []byte, ok bool, err error) {
	v, closer, err := m.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("metadata get %q: %w", key, err)
	}
	defer closer.Close()
	return append([]byte(nil), v...), true, nil
}

// Label returns the member's encoded label, or an error wrapping ErrNoLabel.
func (m *Meta) Label() ([]byte, error) {
	v, ok, err := m.Get(keyLabel)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNoLabel
	}
	return v, nil
}

// SetLabel stores the member's encoded label durably.
func (m *Meta) SetLabel(label []byte) error {
	b := m.NewBatch()
	b.Set(keyLabel, label)
	return b.Commit(true)
}

// Batch collects metadata writes that are applied together.
type Batch struct{ b *pebble.Batch }

// NewBatch returns an empty batch.
func (m *Meta) NewBatch() *Batch { return &Batch{b: m.db.NewBatch()} }

// Set records key = val in the batch.
func (b *Batch) Set(key, val []byte) { _ = b.b.Set(key, val, nil) }

// SetLabel records the member's encoded label in the batch.
func (b *Batch) SetLabel(label []byte) { b.Set(keyLabel, label) }

// Delete records the removal of key in the batch.
func (b *Batch) Delete(key []byte) { _ = b.b.Delete(key, nil) }

// Commit applies the batch atomically; with sync it is durable on return.
func (b *Batch) Commit(sync bool) error {
	opt := pebble.NoSync
	if sync {
		opt = pebble.Sync
	}
	defer b.b.Close()
	if err := b.b.Commit(opt); err != nil {
		return fmt.Errorf("metadata commit: %w", err)
	}
	return nil
}

// Scan calls fn with every key that starts with prefix, in key order, and
// a copy of its value.
func (m *Meta) Scan(prefix []byte, fn func(key, val []byte) error) error {
	upper := append([]byte(nil), prefix...)
	for i := len(upper) - 1; i >= 0; i-- {
		if upper[i]++; upper[i] != 0 {
			upper = upper[:i+1]
			break
		}
	}
	it, err := m.db.NewIter(&pebble.IterOptions{LowerBound: prefix, UpperBound: upper})
	if err != nil {
		return fmt.Errorf("metadata scan %q: %w", prefix, err)
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		if err := fn(append([]byte(nil), it.Key()...), append([]byte(nil), it.Value()...)); err != nil {
			return err
		}
	}
	return it.Error()
}

// Close closes the database.
func (m *Meta) Close() error {
	if err := m.db.Close(); err != nil {
		return fmt.Errorf("close metadata: %w", err)
	}
	return nil
}
