package fuse

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options tune a mount.
type Options struct {
	// FileName is the name of the file in the mount; "volume" if empty.
	FileName string
	// FsName is the source shown in the mount table (/proc/mounts).
	FsName string
	// MaxWrite is the largest read or write the kernel sends, up to 1 MiB
	// (the default).
	MaxWrite int
	// WritebackCache lets the kernel gather buffered writes in its page
	// cache and send them later, in large pieces. Data written that way is
	// durable only after fsync, as on any disk; O_DIRECT I/O is unaffected.
	WritebackCache bool
	// AllowOther lets users other than the one who mounted reach the file
	// (for an ordinary user it needs user_allow_other in /etc/fuse.conf).
	AllowOther bool
	// Observer, if set, is told about every data request.
	Observer Observer
	// Logger receives failed requests; nil means slog.Default().
	Logger *slog.Logger
	// Debug logs every FUSE request and answer.
	Debug bool
}

// MaxWrite is the largest request size the kernel accepts from a FUSE
// server.
const MaxWrite = 1 << 20

// ErrNotMountpoint says the mount point is not a directory that can be
// mounted on.
var ErrNotMountpoint = errors.New("not a usable mount point")

// Mount is a served mount.
type Mount struct {
	dir    string
	server *gofuse.Server
}

// Serve mounts b at dir and serves it in the background until it is
// unmounted. As root it mounts with mount(2) itself; otherwise it needs the
// fusermount3 helper.
func Serve(dir string, b Backend, o Options) (*Mount, error) {
	if o.FileName == "" {
		o.FileName = "volume"
	}
	if o.MaxWrite <= 0 || o.MaxWrite > MaxWrite {
		o.MaxWrite = MaxWrite
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("mount point %s: %w", dir, err)
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a directory: create it first", ErrNotMountpoint, abs)
	}
	caps := uint64(gofuse.CAP_ASYNC_DIO)
	if o.WritebackCache {
		caps |= gofuse.CAP_WRITEBACK_CACHE
	}
	mo := &gofuse.MountOptions{
		FsName:        o.FsName,
		Name:          "lockstep",
		MaxWrite:      o.MaxWrite,
		MaxReadAhead:  128 << 10,
		MaxBackground: 64,
		AllowOther:    o.AllowOther,
		DirectMount:   os.Geteuid() == 0,
		DisableXAttrs: true,
		// Splicing a 1 MiB read's reply needs a pipe larger than Linux
		// allows by default (header and data overflow it); copying is
		// cheaper than failing over to it on every read.
		DisableSplice:     true,
		Logger:            slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn),
		ExtraCapabilities: caps,
		Debug:             o.Debug,
	}
	server, err := gofuse.NewServer(newFS(b, o), abs, mo)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", abs, err)
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		server.Unmount()
		return nil, fmt.Errorf("mount %s: %w", abs, err)
	}
	return &Mount{dir: abs, server: server}, nil
}

// Dir is the mount point, as an absolute path.
func (m *Mount) Dir() string { return m.dir }

// Unmount detaches the mount once nothing holds the file open. It fails
// (the mount still serving) while something does, such as a loop device.
func (m *Mount) Unmount() error {
	if err := m.server.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w (is the volume still open, or attached to a loop device?)", m.dir, err)
	}
	return nil
}

// Wait returns once the mount is gone, whoever unmounted it.
func (m *Mount) Wait() { m.server.Wait() }

// Detach unmounts lazily: the mount point is free at once, and the mount
// serves whoever still holds the file open until they let go.
func (m *Mount) Detach() error {
	var err error
	if os.Geteuid() == 0 {
		err = unix.Unmount(m.dir, unix.MNT_DETACH)
	} else {
		err = exec.Command("fusermount3", "-u", "-z", m.dir).Run()
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", m.dir, err)
	}
	return nil
}
