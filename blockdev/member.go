package blockdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The names of a member's files inside its directory.
const (
	DataFile = "data"
	MetaDir  = "meta"
)

// Member is one member directory opened: its data file, its metadata and its
// checksum table.
type Member struct {
	Dir  string
	Data Device
	Meta *Meta
	Sums *Sums
}

// HoldsMember reports whether dir already holds (part of) a member.
func HoldsMember(dir string) bool {
	for _, name := range []string{DataFile, MetaDir} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return true
		}
	}
	return false
}

// CreateMember makes a new member in dir (created if missing) with a data
// file of size bytes. If it fails it removes what it made.
func CreateMember(dir string, size int64, direct bool) (_ *Member, err error) {
	if HoldsMember(dir) {
		return nil, fmt.Errorf("%s %w", dir, ErrAlreadyMember)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create member directory: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(filepath.Join(dir, MetaDir))
			os.Remove(filepath.Join(dir, DataFile))
		}
	}()
	data, err := CreateFile(filepath.Join(dir, DataFile), size, direct)
	if err != nil {
		return nil, err
	}
	meta, err := OpenMeta(filepath.Join(dir, MetaDir), true, false)
	if err != nil {
		data.Close()
		return nil, err
	}
	return &Member{Dir: dir, Data: data, Meta: meta, Sums: NewSums(meta)}, nil
}

// OpenMember opens the member in dir for reading and writing.
func OpenMember(dir string, direct bool) (*Member, error) {
	if !HoldsMember(dir) {
		return nil, fmt.Errorf("%s is %w (no %s or %s in it)", dir, ErrNotMember, DataFile, MetaDir)
	}
	meta, err := OpenMeta(filepath.Join(dir, MetaDir), false, false)
	if err != nil {
		return nil, err
	}
	data, err := OpenFile(filepath.Join(dir, DataFile), direct)
	if err != nil {
		meta.Close()
		return nil, err
	}
	return &Member{Dir: dir, Data: data, Meta: meta, Sums: NewSums(meta)}, nil
}

// ReadLabel returns the encoded label of the member in dir without opening
// its data, and without writing anything.
func ReadLabel(dir string) ([]byte, error) {
	label, _, err := ReadLabelWith(dir, nil)
	return label, err
}

// ReadLabelWith is ReadLabel that also returns the record under key (nil
// if there is none, or key is nil).
func ReadLabelWith(dir string, key []byte) (label, val []byte, err error) {
	if !HoldsMember(dir) {
		return nil, nil, fmt.Errorf("%s is %w (no %s or %s in it)", dir, ErrNotMember, DataFile, MetaDir)
	}
	meta, err := OpenMeta(filepath.Join(dir, MetaDir), false, true)
	if err != nil {
		return nil, nil, err
	}
	defer meta.Close()
	if label, err = meta.Label(); err != nil || key == nil {
		return label, nil, err
	}
	val, _, err = meta.Get(key)
	return label, val, err
}

// Close stores the checksum table and closes the data and the metadata.
func (m *Member) Close() error {
	errs := []error{m.Sums.Flush(true), m.Data.Close(), m.Meta.Close()}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close member %s: %w", m.Dir, err)
	}
	return nil
}
