package raid_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/raid/raidtest"
)

// makeArray creates (without opening) an array and returns its directories.
func makeArray(t *testing.T, layout string, members int) []string {
	t.Helper()
	root := t.TempDir()
	var dirs []string
	for i := range members {
		dirs = append(dirs, filepath.Join(root, "m"+string(rune('a'+i))))
	}
	if _, err := raid.Create(dirs, raid.Config{Layout: layout, Chunk: 16 << 10, Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	return dirs
}

// editLabel rewrites the label of the member in dir.
func editLabel(t *testing.T, dir string, edit func(l *raid.Label) []byte) {
	t.Helper()
	meta, err := blockdev.OpenMeta(filepath.Join(dir, blockdev.MetaDir), false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	raw, err := meta.Label()
	if err != nil {
		t.Fatal(err)
	}
	l, err := raid.DecodeLabel(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := meta.SetLabel(edit(&l)); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefuses(t *testing.T) {
	a := makeArray(t, "raid5", 3)
	b := makeArray(t, "raid5", 3)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(a[0], link); err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(t.TempDir(), "copy")
	if err := os.CopyFS(copied, os.DirFS(a[1])); err != nil {
		t.Fatal(err)
	}
	otherLayout := makeArray(t, "raid5", 3)
	editLabel(t, otherLayout[2], func(l *raid.Label) []byte { l.Chunk = 32 << 10; return l.Encode() })
	corrupt := makeArray(t, "raid5", 3)
	editLabel(t, corrupt[1], func(*raid.Label) []byte { return []byte(`{"magic":"lockstep-member","version":1,`) })
	badField := makeArray(t, "raid5", 3)
	editLabel(t, badField[0], func(l *raid.Label) []byte { l.Slot = 7; return l.Encode() })

	cases := []struct {
		name string
		dirs []string
		want error
	}{
		{"member of another array", []string{a[0], a[1], b[2]}, raid.ErrForeignMember},
		{"same directory twice", []string{a[0], a[1], a[1]}, raid.ErrDuplicateMember},
		{"same directory through a link", []string{a[0], a[1], link}, raid.ErrDuplicateMember},
		{"copied member", []string{a[0], a[1], copied}, raid.ErrDuplicateMember},
		{"different layout", otherLayout, raid.ErrForeignMember},
		{"too few members", a[:1], raid.ErrTooFewMembers},
		{"not a member", []string{a[0], a[1], t.TempDir()}, blockdev.ErrNotMember},
		{"no such directory", []string{a[0], a[1], filepath.Join(t.TempDir(), "gone")}, os.ErrNotExist},
		{"corrupt label", corrupt, raid.ErrCorruptLabel},
		{"label with a bad field", badField, raid.ErrCorruptLabel},
		{"nothing", nil, raid.ErrTooFewMembers},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := raid.Open(c.dirs, raid.Options{})
			if err == nil {
				v.Close()
				t.Fatalf("Open succeeded, want %v", c.want)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("Open = %v, want %v", err, c.want)
			}
			if _, err := raid.Inspect(c.dirs); c.want != raid.ErrTooFewMembers && err == nil {
				t.Fatalf("Inspect accepted what Open refused")
			}
		})
	}
}

func TestDegradedAndStaleAssembly(t *testing.T) {
	dirs := makeArray(t, "raid6", 4)
	r, err := raid.Inspect(dirs)
	if err != nil || r.State != raid.ArrayOptimal {
		t.Fatalf("Inspect of a fresh array = %+v, %v", r, err)
	}
	// Members 0 and 1 move on to generation 2; 2 and 3 are left stale.
	for _, d := range dirs[:2] {
		editLabel(t, d, func(l *raid.Label) []byte { l.Generation = 2; return l.Encode() })
	}
	r, err = raid.Inspect(dirs)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != raid.ArrayDegraded || r.Generation != 2 {
		t.Fatalf("state %s generation %d, want DEGRADED at 2", r.State, r.Generation)
	}
	for _, s := range r.Slots[2:] {
		if s.State != raid.StateStale || s.Generation != 1 {
			t.Fatalf("slot %d = %+v, want STALE at generation 1", s.Slot, s)
		}
	}
	v, err := raid.Open(dirs, raid.Options{})
	if err != nil {
		t.Fatalf("Open with two stale members of raid6: %v", err)
	}
	v.Close()
	// Without one of the current members, too few are left.
	r, err = raid.Inspect(dirs[1:])
	if err != nil || r.State != raid.ArrayFailed || r.Slots[0].State != raid.StateMissing {
		t.Fatalf("Inspect = %+v, %v, want FAILED with slot 0 MISSING", r, err)
	}
	if _, err := raid.Open(dirs[1:], raid.Options{}); !errors.Is(err, raid.ErrTooFewMembers) {
		t.Fatalf("Open = %v, want ErrTooFewMembers", err)
	}
}

// snapshot lists every path under root with its size, to prove that a
// refused command changed nothing.
func snapshot(t *testing.T, root string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			out[p] = info.Size()
		}
		return nil
	})
	return out
}

func TestCreateRefuses(t *testing.T) {
	root := t.TempDir()
	dirs := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, filepath.Join(root, "d"+string(rune('0'+i))))
		}
		return out
	}
	existing := makeArray(t, "raid1", 2)
	cases := []struct {
		name string
		dirs []string
		c    raid.Config
		want error
	}{
		{"chunk not a power of two", dirs(3), raid.Config{Layout: "raid5", Chunk: 48 << 10, Size: 1 << 20}, raid.ErrBadChunk},
		{"chunk below a block", dirs(3), raid.Config{Layout: "raid5", Chunk: 512, Size: 1 << 20}, raid.ErrBadChunk},
		{"too few for raid5", dirs(2), raid.Config{Layout: "raid5", Size: 1 << 20}, raid.ErrTooFewMembers},
		{"too few for raid6", dirs(3), raid.Config{Layout: "raid6", Size: 1 << 20}, raid.ErrTooFewMembers},
		{"odd raid10", dirs(5), raid.Config{Layout: "raid10", Size: 1 << 20}, raid.ErrTooFewMembers},
		{"wrong count for mirror:3", dirs(2), raid.Config{Layout: "mirror:3", Size: 1 << 20}, raid.ErrTooFewMembers},
		{"K+M beyond the codec", dirs(3), raid.Config{Layout: "rs:200+100", Size: 1 << 20}, raid.ErrBadLayout},
		{"unknown layout", dirs(3), raid.Config{Layout: "raid7", Size: 1 << 20}, raid.ErrBadLayout},
		{"size that does not fit", dirs(3), raid.Config{Layout: "raid5", Size: 1 << 60}, raid.ErrBadSize},
		{"size not a block multiple", dirs(3), raid.Config{Layout: "raid5", Size: 1000}, raid.ErrBadSize},
		{"directory holding a member", []string{existing[0], filepath.Join(root, "x")}, raid.Config{Layout: "raid1", Size: 1 << 20}, blockdev.ErrAlreadyMember},
		{"same directory twice", []string{filepath.Join(root, "y"), filepath.Join(root, "y")}, raid.Config{Layout: "raid1", Size: 1 << 20}, raid.ErrDuplicateMember},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before, beforeExisting := snapshot(t, root), snapshot(t, existing[0])
			if _, err := raid.Create(c.dirs, c.c); !errors.Is(err, c.want) {
				t.Fatalf("Create = %v, want %v", err, c.want)
			}
			after, afterExisting := snapshot(t, root), snapshot(t, existing[0])
			if len(before) != len(after) || len(beforeExisting) != len(afterExisting) {
				t.Fatalf("a refused Create changed the disk: %v -> %v", before, after)
			}
		})
	}
	if _, err := raid.Create([]string{filepath.Join(root, "no", "such")}, raid.Config{Layout: "raid0"}); err == nil {
		t.Fatal("Create under a missing parent succeeded")
	}
}

func TestCreateDefaultsAndFormat(t *testing.T) {
	a := raidtest.New(t, raid.Config{Layout: "raid6", Size: 3 << 20}, 5)
	l := a.Vol.Label()
	if l.Chunk != raid.DefaultChunk || l.ArrayName != "lockstep" || l.Generation != 1 || a.Vol.Size() != 3<<20 {
		t.Fatalf("defaults: %+v", l)
	}
	// 3 MiB over 3 data chunks of 64 KiB: 16 stripes, so each member holds
	// 16 chunks.
	st, err := os.Stat(filepath.Join(a.Dirs[0], blockdev.DataFile))
	if err != nil || st.Size() != 16*raid.DefaultChunk {
		t.Fatalf("member data file: %v, %v", st.Size(), err)
	}
}

// TestLabelsLeftBehindByACrashCatchUp: a generation change writes the new
// label and roster to the members one after another; a crash in the middle
// leaves some a generation behind. Those the new roster lists as online
// are current all the same (and their labels are brought up to date at
// open); those it lists as fenced, or that lag further, stay stale.
func TestLabelsLeftBehindByACrashCatchUp(t *testing.T) {
	c := raid.Config{Layout: "raid6", Chunk: 16 << 10, Size: 1 << 20}
	a := raidtest.New(t, c, 5)
	m := make(raidtest.Model, c.Size)
	raidtest.Fill(seeded(t), m)
	if _, err := a.Vol.WriteAt(m, 0); err != nil {
		t.Fatal(err)
	}
	if err := a.Vol.Fail(4); err != nil { // generation 2: member 4 left out, FAULTED in the roster
		t.Fatal(err)
	}
	a.Close(t)
	labelOf := func(dir string) raid.Label {
		raw, err := blockdev.ReadLabel(dir)
		if err != nil {
			t.Fatal(err)
		}
		l, err := raid.DecodeLabel(raw)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	gen := labelOf(a.Dirs[0]).Generation
	// The crash: members 2 and 3 did not get the last change's label.
	for _, d := range a.Dirs[2:4] {
		editLabel(t, d, func(l *raid.Label) []byte { l.Generation = gen - 1; return l.Encode() })
	}
	r, err := raid.Inspect(a.Dirs)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{raid.StateOnline, raid.StateOnline, raid.StateOnline, raid.StateOnline, raid.StateStale}
	for slot, s := range r.Slots {
		if s.State != want[slot] {
			t.Fatalf("slot %d is %s, want %s (report %+v)", slot, s.State, want[slot], r)
		}
	}
	a.Open(t, a.Dirs...)
	raidtest.Expect(t, a.Vol, m, 0, c.Size)
	if st := a.Vol.Status(); st.State != raid.ArrayDegraded || st.Members[2].State != "ONLINE" || st.Members[4].State != "FAULTED" {
		t.Fatalf("after open: %s, members %+v", st.State, st.Members)
	}
	a.Close(t)
	now := labelOf(a.Dirs[0]).Generation
	for _, d := range a.Dirs[:4] {
		if g := labelOf(d).Generation; g != now || g < gen {
			t.Fatalf("%s is at generation %d after the open, want %d like member 0", d, g, now)
		}
	}
	gen = now

	// Two generations behind is a member a change left out, not a crash.
	editLabel(t, a.Dirs[3], func(l *raid.Label) []byte { l.Generation = gen - 2; return l.Encode() })
	if r, err := raid.Inspect(a.Dirs); err != nil || r.Slots[3].State != raid.StateStale {
		t.Fatalf("a member two generations behind: %+v, %v; want it STALE", r, err)
	}
}
