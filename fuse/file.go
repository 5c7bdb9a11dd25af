package fuse

import "github.com/lockstepfs/lockstep/blockdev"

// File is a Backend over one plain file, with no RAID: the FUSE floor that
// benchmarks hold the engine's mount against. Its I/O must be block-aligned,
// as the kernel's page cache and O_DIRECT clients make it.
type File struct {
	*blockdev.File
}

// OpenFile opens an existing file, with O_DIRECT if direct, as a Backend of
// its current size.
func OpenFile(path string, direct bool) (*File, error) {
	f, err := blockdev.OpenFile(path, direct)
	if err != nil {
		return nil, err
	}
	return &File{f}, nil
}

// Flush syncs the file's data.
func (f *File) Flush() error { return f.Sync() }
