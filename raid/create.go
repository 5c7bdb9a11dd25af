package raid

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/lockstepfs/lockstep/blockdev"
)

// Config describes a new array.
type Config struct {
	Layout string // see ParseLayout
	Chunk  int64  // bytes per chunk; 0 means DefaultChunk
	Size   int64  // bytes in the volume; 0 means the largest that fits
	Name   string // a name for people; defaults to "lockstep"
	// Spares are directories to format as hot spares: a failover takes
	// one for a fenced member and rebuilds onto it.
	Spares []string
}

// metaReserve is the space kept free beside a member's data for its
// metadata: the checksum table (4 bytes per 4 KiB block) and pebble's slack.
func metaReserve(capacity int64) int64 { return capacity/512 + 32<<20 }

// Create makes a new array on dirs, one member each, in slot order. It checks
// everything first and, if anything is wrong, changes nothing; if creating a
// member fails midway it removes what it made. It returns slot 0's label.
func Create(dirs []string, c Config) (Label, error) {
	l, err := ParseLayout(c.Layout, len(dirs))
	if err != nil {
		return Label{}, err
	}
	if c.Chunk == 0 {
		c.Chunk = DefaultChunk
	}
	if err := checkChunk(c.Chunk); err != nil {
		return Label{}, err
	}
	if c.Name == "" {
		c.Name = "lockstep"
	}
	all, err := checkDirs(append(append([]string(nil), dirs...), c.Spares...), true)
	if err != nil {
		return Label{}, err
	}
	dirs = all[:len(dirs)]
	g, err := fitSize(l, c.Chunk, c.Size, all)
	if err != nil {
		return Label{}, err
	}
	base := Label{
		Magic: labelMagic, Version: labelVersion, ArrayUUID: newUUID(), ArrayName: c.Name,
		Layout: l.Name, Members: l.Members, Chunk: c.Chunk, Size: g.size, Generation: 1,
	}
	var made []string
	undo := func() {
		for _, d := range made {
			os.RemoveAll(filepath.Join(d, blockdev.MetaDir))
			os.Remove(filepath.Join(d, blockdev.DataFile))
		}
	}
	labels := make([]Label, len(all))
	r := roster{Generation: base.Generation}
	for i, dir := range all {
		if i < len(dirs) {
			labels[i] = base
			labels[i].Slot, labels[i].MemberUUID = i, newUUID()
			r.Slots = append(r.Slots, rosterEntry{UUID: labels[i].MemberUUID, Dir: dir, State: Online.String()})
		} else {
			labels[i] = spareLabel(base)
			r.Spares = append(r.Spares, rosterEntry{UUID: labels[i].MemberUUID, Dir: dir})
		}
	}
	rost, _ := json.Marshal(r)
	for i, dir := range all {
		if labels[i].Spare {
			rost = nil
		}
		if err := formatMember(dir, g.memberSize(), labels[i], rost); err != nil {
			undo()
			return Label{}, err
		}
		made = append(made, dir)
	}
	base.MemberUUID = ""
	return base, nil
}

// spareLabel returns the label of a new hot spare of the array base
// describes.
func spareLabel(base Label) Label {
	base.Slot, base.MemberUUID, base.Spare = 0, newUUID(), true
	return base
}

// formatMember makes a new member with the given label (and roster, if
// not nil) in dir: a data file of capacity bytes, reading as zeros, and
// fresh metadata.
func formatMember(dir string, capacity int64, l Label, rost []byte) error {
	m, err := blockdev.CreateMember(dir, capacity, false)
	if err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	b := m.Meta.NewBatch()
	b.SetLabel(l.Encode())
	if rost != nil {
		b.Set(keyRoster, rost)
	}
	if err := errors.Join(b.Commit(true), m.Close()); err != nil {
		os.RemoveAll(filepath.Join(dir, blockdev.MetaDir))
		os.Remove(filepath.Join(dir, blockdev.DataFile))
		return fmt.Errorf("write label in %s: %w", dir, err)
	}
	return nil
}

// checkDirs makes every directory absolute and refuses duplicates, by path
// and by identity (the same directory through a link). With creating, a
// directory may be missing if its parent exists, and must not hold a member;
// otherwise it must exist.
func checkDirs(dirs []string, creating bool) ([]string, error) {
	type id struct{ dev, ino uint64 }
	seenPath := map[string]bool{}
	seenID := map[id]string{}
	out := make([]string, len(dirs))
	for i, d := range dirs {
		abs, err := filepath.Abs(d)
		if err != nil {
			return nil, fmt.Errorf("directory %q: %w", d, err)
		}
		if seenPath[abs] {
			return nil, fmt.Errorf("%w: %s is listed twice", ErrDuplicateMember, abs)
		}
		seenPath[abs] = true
		out[i] = abs
		st, err := os.Stat(abs)
		switch {
		case errors.Is(err, os.ErrNotExist) && creating:
			if pst, perr := os.Stat(filepath.Dir(abs)); perr != nil || !pst.IsDir() {
				return nil, fmt.Errorf("member directory %s: its parent %s does not exist: create it first", abs, filepath.Dir(abs))
			}
			continue
		case err != nil:
			return nil, fmt.Errorf("member directory %s: %w", abs, err)
		case !st.IsDir():
			return nil, fmt.Errorf("member directory %s is not a directory", abs)
		}
		sys := st.Sys().(*syscall.Stat_t)
		k := id{uint64(sys.Dev), sys.Ino}
		if other, ok := seenID[k]; ok {
			return nil, fmt.Errorf("%w: %s and %s are the same directory", ErrDuplicateMember, other, abs)
		}
		seenID[k] = abs
		if creating && blockdev.HoldsMember(abs) {
			return nil, fmt.Errorf("%s %w: give an empty directory, or remove the old member first", abs, blockdev.ErrAlreadyMember)
		}
	}
	return out, nil
}

// fitSize works out the geometry for a requested size (0 = the largest
// that fits) and checks that every file system has room for the members it
// holds, with their metadata.
func fitSize(l Layout, chunk, size int64, dirs []string) (geometry, error) {
	if size < 0 || size%blockdev.BlockSize != 0 {
		return geometry{}, fmt.Errorf("%w: %d bytes is not a positive multiple of 4KiB", ErrBadSize, size)
	}
	type fsInfo struct {
		avail int64
		dirs  []string
	}
	byFS := map[uint64]*fsInfo{}
	for _, d := range dirs {
		probe := d
		if _, err := os.Stat(d); err != nil {
			probe = filepath.Dir(d)
		}
		var st unix.Statfs_t
		var fst unix.Stat_t
		if err := unix.Statfs(probe, &st); err != nil {
			return geometry{}, fmt.Errorf("free space of %s: %w", probe, err)
		}
		if err := unix.Stat(probe, &fst); err != nil {
			return geometry{}, fmt.Errorf("stat %s: %w", probe, err)
		}
		fs := byFS[fst.Dev]
		if fs == nil {
			fs = &fsInfo{avail: int64(st.Bavail) * st.Bsize}
			byFS[fst.Dev] = fs
		}
		fs.dirs = append(fs.dirs, d)
	}
	if size == 0 {
		perMember := int64(-1)
		for _, fs := range byFS {
			each := (fs.avail/int64(len(fs.dirs)) - 32<<20) * 512 / 513
			if perMember < 0 || each < perMember {
				perMember = each
			}
		}
		size = perMember / chunk * chunk * int64(l.Data)
		if size <= 0 {
			return geometry{}, fmt.Errorf("%w: no room for even one stripe on the members' file systems", ErrBadSize)
		}
	}
	g := newGeometry(l, chunk, size)
	per := g.memberSize() + metaReserve(g.memberSize())
	for _, fs := range byFS {
		if need := per * int64(len(fs.dirs)); need > fs.avail {
			return geometry{}, fmt.Errorf("%w: a %s volume needs %s on the file system of %s (%d member(s) of %s each), which has %s free: choose a smaller --size",
				ErrBadSize, FormatSize(size), FormatSize(need), fs.dirs[0], len(fs.dirs), FormatSize(per), FormatSize(fs.avail))
		}
	}
	return g, nil
}
