package fuse

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Backend is what a mount serves as its one file: a fixed-size device that
// takes reads and writes at any offset. *raid.Volume is one; File, a plain
// file, is the baseline that benchmarks compare it with.
type Backend interface {
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	// Flush makes every write that returned before it durable.
	Flush() error
	// Discard makes a range read as zeros and lets the backend forget it.
	Discard(off, n int64) error
	Size() int64
}

// Observer is told about every data request the mount serves, for metrics.
type Observer interface {
	Observe(op Op, bytes int, took time.Duration, err error)
}

// Op names a kind of data request.
type Op string

// The data requests a mount serves.
const (
	OpRead    Op = "read"
	OpWrite   Op = "write"
	OpFlush   Op = "flush"
	OpDiscard Op = "discard"
)

// Inode numbers: the mount has a root directory and one file.
const (
	rootIno = gofuse.FUSE_ROOT_ID
	fileIno = rootIno + 1
)

// attrTimeout is how long the kernel may cache names and attributes. Nothing
// but this mount changes them, and the file's size never changes.
const attrTimeout = time.Hour

// fs is the raw FUSE file system: requests arrive already decoded, and are
// answered without going through go-fuse's inode tree, which a single file
// does not need.
type fs struct {
	gofuse.RawFileSystem // ENOSYS for everything not below

	b       Backend
	name    string
	log     *slog.Logger
	obs     Observer
	uid     uint32
	gid     uint32
	started time.Time
	bufs    sync.Pool // buffers for writes the kernel splits in pieces
}

func newFS(b Backend, o Options) *fs {
	f := &fs{RawFileSystem: gofuse.NewDefaultRawFileSystem(), b: b, name: o.FileName, log: o.Logger, obs: o.Observer,
		uid: uint32(syscall.Geteuid()), gid: uint32(syscall.Getegid()), started: time.Now()}
	f.bufs.New = func() any { b := make([]byte, o.MaxWrite); return &b }
	return f
}

func (f *fs) String() string { return "lockstep" }

// attr fills the attributes of the root or the file.
func (f *fs) attr(ino uint64, a *gofuse.Attr) {
	t := uint64(f.started.Unix())
	*a = gofuse.Attr{Ino: ino, Atime: t, Mtime: t, Ctime: t, Blksize: 4096}
	a.Owner = gofuse.Owner{Uid: f.uid, Gid: f.gid}
	if ino == rootIno {
		a.Mode, a.Nlink = syscall.S_IFDIR|0o755, 2
		return
	}
	size := uint64(f.b.Size())
	a.Mode, a.Nlink, a.Size, a.Blocks = syscall.S_IFREG|0o600, 1, size, size/512
}

func (f *fs) entry(out *gofuse.EntryOut) {
	out.NodeId, out.Generation = fileIno, 1
	out.SetEntryTimeout(attrTimeout)
	out.SetAttrTimeout(attrTimeout)
	f.attr(fileIno, &out.Attr)
}

// Lookup finds the one file in the root.
func (f *fs) Lookup(_ <-chan struct{}, h *gofuse.InHeader, name string, out *gofuse.EntryOut) gofuse.Status {
	if h.NodeId != rootIno || name != f.name {
		return gofuse.ENOENT
	}
	f.entry(out)
	return gofuse.OK
}

// Forget has nothing to do: the inodes live as long as the mount.
func (f *fs) Forget(uint64, uint64) {}

// GetAttr reports the root's or the file's attributes.
func (f *fs) GetAttr(_ <-chan struct{}, in *gofuse.GetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	if in.NodeId != rootIno && in.NodeId != fileIno {
		return gofuse.ENOENT
	}
	out.SetTimeout(attrTimeout)
	f.attr(in.NodeId, &out.Attr)
	return gofuse.OK
}

// SetAttr accepts what leaves the file as it is (its own size, times) and
// refuses the rest: the volume's size, owner and mode are fixed.
func (f *fs) SetAttr(_ <-chan struct{}, in *gofuse.SetAttrIn, out *gofuse.AttrOut) gofuse.Status {
	if in.NodeId != fileIno {
		return gofuse.EPERM
	}
	if size, ok := in.GetSize(); ok && int64(size) != f.b.Size() {
		return gofuse.EPERM
	}
	if in.Valid&(gofuse.FATTR_MODE|gofuse.FATTR_UID|gofuse.FATTR_GID) != 0 {
		return gofuse.EPERM
	}
	out.SetTimeout(attrTimeout)
	f.attr(fileIno, &out.Attr)
	return gofuse.OK
}

// Access lets the kernel's own permission checks stand.
func (f *fs) Access(<-chan struct{}, *gofuse.AccessIn) gofuse.Status { return gofuse.OK }

// Open opens the file. Page-cache contents stay valid across opens, since
// every change goes through this mount; O_DIRECT writes may run in
// parallel, since the engine orders overlapping writes itself.
func (f *fs) Open(_ <-chan struct{}, in *gofuse.OpenIn, out *gofuse.OpenOut) gofuse.Status {
	if in.NodeId != fileIno {
		return gofuse.EISDIR
	}
	if in.Flags&syscall.O_TRUNC != 0 && f.b.Size() > 0 {
		return gofuse.EPERM
	}
	out.OpenFlags = gofuse.FOPEN_KEEP_CACHE | gofuse.FOPEN_PARALLEL_DIRECT_WRITES
	return gofuse.OK
}

// Read reads from the backend straight into go-fuse's reply buffer.
func (f *fs) Read(_ <-chan struct{}, in *gofuse.ReadIn, buf []byte) (gofuse.ReadResult, gofuse.Status) {
	start := time.Now()
	off, size := int64(in.Offset), f.b.Size()
	if off >= size {
		return gofuse.ReadResultData(nil), gofuse.OK
	}
	p := buf[:min(int64(in.Size), int64(len(buf)), size-off)]
	n, err := f.b.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	f.done(OpRead, off, len(p), start, err)
	if err != nil {
		return nil, gofuse.EIO
	}
	return gofuse.ReadResultData(p[:n]), gofuse.OK
}

// Writev writes what the kernel sent, joining its pieces if it split them.
// A write that runs past the end writes what fits, as a block device does;
// one that starts at the end fails with ENOSPC.
func (f *fs) Writev(_ <-chan struct{}, in *gofuse.WriteIn, data [][]byte) (uint32, gofuse.Status) {
	start := time.Now()
	p := data[0]
	if len(data) > 1 {
		bp := f.bufs.Get().(*[]byte)
		defer f.bufs.Put(bp)
		p = (*bp)[:0]
		for _, d := range data {
			p = append(p, d...)
		}
	}
	off, size := int64(in.Offset), f.b.Size()
	if off >= size {
		if len(p) == 0 {
			return 0, gofuse.OK
		}
		return 0, gofuse.Status(syscall.ENOSPC)
	}
	p = p[:min(int64(len(p)), size-off)]
	n, err := f.b.WriteAt(p, off)
	f.done(OpWrite, off, len(p), start, err)
	if err != nil {
		return 0, gofuse.EIO
	}
	return uint32(n), gofuse.OK
}

// Flush (on every close) does nothing: like a disk, the volume makes data
// durable on fsync, not on close.
func (f *fs) Flush(<-chan struct{}, *gofuse.FlushIn) gofuse.Status { return gofuse.OK }

// Release has nothing to free: file handles carry no state.
func (f *fs) Release(<-chan struct{}, *gofuse.ReleaseIn) {}

// Fsync makes every acknowledged write durable.
func (f *fs) Fsync(_ <-chan struct{}, in *gofuse.FsyncIn) gofuse.Status {
	start := time.Now()
	err := f.b.Flush()
	f.done(OpFlush, 0, 0, start, err)
	if err != nil {
		return gofuse.EIO
	}
	return gofuse.OK
}

// Fallocate punches holes (discard) and zeroes ranges; plain allocation
// within the file succeeds, since every byte of the volume already exists.
func (f *fs) Fallocate(_ <-chan struct{}, in *gofuse.FallocateIn) gofuse.Status {
	off, n, size := int64(in.Offset), int64(in.Length), f.b.Size()
	switch mode := in.Mode; {
	case mode&^unix.FALLOC_FL_KEEP_SIZE == 0:
		if off+n > size && mode&unix.FALLOC_FL_KEEP_SIZE == 0 {
			return gofuse.Status(syscall.EFBIG)
		}
		return gofuse.OK
	case mode == unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE,
		mode&^unix.FALLOC_FL_KEEP_SIZE == unix.FALLOC_FL_ZERO_RANGE:
		if off >= size {
			return gofuse.OK
		}
		n = min(n, size-off)
		start := time.Now()
		err := f.b.Discard(off, n)
		f.done(OpDiscard, off, int(n), start, err)
		if err != nil {
			return gofuse.EIO
		}
		return gofuse.OK
	}
	return gofuse.Status(syscall.EOPNOTSUPP)
}

// OpenDir opens the root.
func (f *fs) OpenDir(_ <-chan struct{}, in *gofuse.OpenIn, _ *gofuse.OpenOut) gofuse.Status {
	if in.NodeId != rootIno {
		return gofuse.ENOTDIR
	}
	return gofuse.OK
}

// ReadDir lists the root: itself, its parent and the file.
func (f *fs) ReadDir(_ <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	for i, e := range f.dirEntries()[min(in.Offset, 3):] {
		e.Off = in.Offset + uint64(i) + 1
		if !out.AddDirEntry(e) {
			break
		}
	}
	return gofuse.OK
}

// ReadDirPlus lists the root with the file's attributes.
func (f *fs) ReadDirPlus(_ <-chan struct{}, in *gofuse.ReadIn, out *gofuse.DirEntryList) gofuse.Status {
	for i, e := range f.dirEntries()[min(in.Offset, 3):] {
		e.Off = in.Offset + uint64(i) + 1
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			break
		}
		if e.Ino == fileIno {
			f.entry(eo)
		}
	}
	return gofuse.OK
}

func (f *fs) dirEntries() []gofuse.DirEntry {
	return []gofuse.DirEntry{
		{Name: ".", Ino: rootIno, Mode: syscall.S_IFDIR},
		{Name: "..", Ino: rootIno, Mode: syscall.S_IFDIR},
		{Name: f.name, Ino: fileIno, Mode: syscall.S_IFREG},
	}
}

// ReleaseDir has nothing to free.
func (f *fs) ReleaseDir(*gofuse.ReleaseIn) {}

// StatFs reports the volume as a full file system of one file.
func (f *fs) StatFs(_ <-chan struct{}, _ *gofuse.InHeader, out *gofuse.StatfsOut) gofuse.Status {
	*out = gofuse.StatfsOut{Blocks: uint64(f.b.Size()) / 4096, Files: 1, Bsize: 4096, Frsize: 4096, NameLen: 255}
	return gofuse.OK
}

// done reports a data request of n bytes to the observer, and logs it if
// it failed.
func (f *fs) done(op Op, off int64, n int, start time.Time, err error) {
	if f.obs != nil {
		f.obs.Observe(op, n, time.Since(start), err)
	}
	if err != nil {
		f.log.Error("request failed", "op", op, "offset", off, "bytes", n, "err", err)
	}
}
