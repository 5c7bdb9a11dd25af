// Package daemon is lockstep mount: it assembles the array, serves it
// through FUSE, answers the control socket and the metrics endpoint, and
// takes it all down cleanly on a signal or lockstep umount.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/fuse"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/scrub"
)

// Config is what lockstep mount was asked to do.
type Config struct {
	Dirs       []string
	Mountpoint string
	Volume     raid.Options // read policy, failure policy, O_DIRECT
	Mount      fuse.Options // writeback cache, allow-other
	// Settings are recorded options the engine does not report itself,
	// shown by status.
	Settings map[string]string
	// Metrics, if set, is the address of the Prometheus endpoint.
	Metrics string
	// Rate bounds rebuilds and scrubs; nil means scrub.DefaultRate.
	Rate   *scrub.Rate
	Logger *slog.Logger
}

// Daemon is a running mount.
type Daemon struct {
	cfg      Config
	log      *slog.Logger
	vol      *raid.Volume
	jobs     *scrub.Runner
	mnt      *fuse.Mount
	ctl      *control.Server
	mtr      *metricsServer
	info     control.MountInfo
	gone     chan struct{} // closed once the mount has gone away, by whatever means
	done     chan struct{} // closed once everything is closed
	once     sync.Once
	err      error      // the outcome of stopping
	umountMu sync.Mutex // one Umount at a time
	faults   injector   // what lockstep inject has done to each member disk
}

// Start assembles the array, mounts it and opens the control socket and
// metrics endpoint. When it returns without error the volume is served.
func Start(cfg Config) (*Daemon, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	canon, err := control.Canonical(cfg.Mountpoint)
	if err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, log: log, gone: make(chan struct{}), done: make(chan struct{})}
	d.info = control.MountInfo{Mountpoint: canon, PID: os.Getpid(), Since: time.Now(), Socket: control.SocketPath(canon), Settings: cfg.Settings}
	var undo []func()
	fail := func(err error) (*Daemon, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return nil, err
	}
	if c, err := os.Stat(d.info.Socket); err == nil && c.Mode()&os.ModeSocket != 0 {
		if err := control.Call(canon, control.Request{Cmd: control.CmdStatus}, nil, 2*time.Second); err == nil {
			return nil, fmt.Errorf("%s is already served by a lockstep mount: unmount it first (lockstep umount %s)", canon, canon)
		}
	}
	m := newMetrics()
	o := cfg.Volume
	o.Logger = log
	if o.Wrap == nil {
		o.Wrap = d.faults.wrap
	}
	d.vol, err = raid.Open(cfg.Dirs, o)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { d.vol.Close() })
	rate := scrub.DefaultRate
	if cfg.Rate != nil {
		rate = *cfg.Rate
	}
	if d.jobs, err = scrub.Start(d.vol, rate, log); err != nil {
		return fail(err)
	}
	undo = append(undo, d.jobs.Stop)
	m.vol = d.vol
	if cfg.Metrics != "" {
		d.mtr, err = serveMetrics(cfg.Metrics, m, log)
		if err != nil {
			return fail(err)
		}
		d.info.Metrics = d.mtr.addr
		undo = append(undo, func() { d.mtr.close() })
	}
	mo := cfg.Mount
	mo.Logger, mo.Observer = log, m
	if mo.FsName == "" {
		mo.FsName = "lockstep:" + d.vol.Label().ArrayName
	}
	d.mnt, err = fuse.Serve(canon, d.vol, mo)
	if err != nil {
		return fail(err)
	}
	undo = append(undo, func() { d.mnt.Unmount(); d.mnt.Wait() })
	d.ctl, err = control.Listen(d.info.Socket, os.Geteuid(), d.handle, log)
	if err != nil {
		return fail(err)
	}
	go func() {
		d.mnt.Wait()
		close(d.gone)
	}()
	st := d.vol.Status()
	log.Info("serving", "mountpoint", canon, "array", st.Array, "layout", st.Layout, "state", st.State,
		"size", d.vol.Size(), "socket", d.info.Socket, "metrics", d.info.Metrics)
	return d, nil
}

// Info describes the mount.
func (d *Daemon) Info() control.MountInfo { return d.info }

// Wait serves until the mount goes away (lockstep umount, umount(8)) or ctx
// ends (a signal), then stops everything and returns how stopping went.
func (d *Daemon) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		d.log.Info("stopping on signal")
		d.stop()
	case <-d.gone:
		d.stop()
	case <-d.done:
	}
	<-d.done
	// The control socket closes last, after answering an umount request
	// that may have brought the mount down.
	d.ctl.Close()
	return d.err
}

// Umount unmounts, then closes everything. It fails, leaving the mount
// serving, while the volume is in use (open, or attached to a loop device).
func (d *Daemon) Umount() error {
	d.umountMu.Lock()
	defer d.umountMu.Unlock()
	select {
	case <-d.done:
		return d.err
	default:
	}
	if err := d.mnt.Unmount(); err != nil {
		return err
	}
	d.stop()
	<-d.done
	return d.err
}

// stop takes the mount down once: unmounted (lazily if it is busy, serving
// its last users until they let go), the volume flushed and closed, the
// metrics endpoint closed.
func (d *Daemon) stop() {
	d.once.Do(func() {
		go func() {
			defer close(d.done)
			var errs []error
			select {
			case <-d.gone:
			default:
				if err := d.mnt.Unmount(); err != nil {
					d.log.Warn("volume busy: detaching the mount; it serves until its last user closes it", "err", err)
					if err := d.mnt.Detach(); err != nil {
						// Still mounted: flush and close all the same,
						// since the process ends; clients then get ENOTCONN.
						errs = append(errs, err)
					}
				}
				if errs == nil {
					<-d.gone
				}
			}
			d.jobs.Stop()
			if err := d.vol.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close volume: %w", err))
			}
			if d.mtr != nil {
				d.mtr.close()
			}
			d.err = errors.Join(errs...)
			if d.err != nil {
				d.log.Error("stopped with errors", "err", d.err)
			} else {
				d.log.Info("stopped: volume flushed and closed, unmounted")
			}
		}()
	})
}

// handle answers a control request.
func (d *Daemon) handle(_ context.Context, r control.Request) (any, error) {
	switch r.Cmd {
	case control.CmdStatus:
		return d.status()
	case control.CmdScrub:
		return d.scrub(r)
	case control.CmdRebuild:
		return d.rebuild(r)
	case control.CmdSpare:
		switch r.Action {
		case "add":
			return d.status(d.vol.AddSpare(r.Dir))
		case "remove":
			return d.status(d.vol.RemoveSpare(r.Dir))
		}
		return nil, fmt.Errorf("spare %q: use add or remove", r.Action)
	case control.CmdReplace:
		slot, err := d.member(r.Member)
		if err != nil {
			return nil, err
		}
		return d.status(d.vol.Replace(slot, r.Dir))
	case control.CmdInject:
		return d.inject(r)
	case control.CmdEvents:
		return d.vol.Events(), nil
	case control.CmdFail, control.CmdApprove:
		slot, err := d.member(r.Member)
		if err != nil {
			return nil, err
		}
		if r.Cmd == control.CmdFail {
			err = d.vol.Fail(slot)
		} else {
			err = d.vol.Approve(slot)
		}
		if err != nil {
			return nil, err
		}
		return d.vol.Status(), nil
	case control.CmdUmount:
		return d.info, d.Umount()
	case "":
		return nil, errors.New("request names no command: send {\"cmd\": ...}")
	}
	return nil, fmt.Errorf("unknown command %q: use %s", r.Cmd, strings.Join([]string{control.CmdStatus, control.CmdEvents, control.CmdFail,
		control.CmdApprove, control.CmdScrub, control.CmdRebuild, control.CmdSpare, control.CmdReplace, control.CmdInject, control.CmdUmount}, ", "))
}

// status answers with the mount's status, unless err (what a command
// before it did) is not nil.
func (d *Daemon) status(err ...error) (control.Status, error) {
	if err := errors.Join(err...); err != nil {
		return control.Status{}, err
	}
	st := control.Status{Mount: d.info, Array: d.vol.Status(), Jobs: []control.Job{}, RebuildPaused: d.jobs.RebuildPaused()}
	st.Faults = d.faults.active(st.Array.Members)
	state := "running"
	if st.RebuildPaused {
		state = "paused"
	}
	for i, b := range st.Array.Rebuilds {
		rate := 0.0
		if i == 0 {
			rate = d.jobs.RebuildRate()
		} else {
			state = "waiting"
		}
		st.Jobs = append(st.Jobs, control.NewJob(b.Kind, b.Slot, state, b.Done, b.Total, rate))
	}
	if s, rate, ok := d.jobs.ScrubStatus(); ok {
		st.Scrub = &s
		if s.State == scrub.Running || s.State == scrub.Paused {
			st.Jobs = append(st.Jobs, control.NewJob("scrub", -1, s.State, s.Done, s.Total, rate))
		}
	}
	var cerr error
	st.Coverage, cerr = d.jobs.Coverage()
	if cerr != nil {
		d.log.Warn("scrub coverage", "err", cerr)
	}
	return st, nil
}

// scrub starts, pauses, resumes or cancels a scrub, or reports on it.
func (d *Daemon) scrub(r control.Request) (control.Status, error) {
	var err error
	switch r.Action {
	case "start":
		_, err = d.jobs.StartScrub(r.Check)
	case "pause":
		_, err = d.jobs.PauseScrub()
	case "resume":
		_, err = d.jobs.ResumeScrub()
	case "cancel":
		_, err = d.jobs.CancelScrub()
	case "status":
	default:
		err = fmt.Errorf("scrub %q: use start, status, pause, resume or cancel", r.Action)
	}
	return d.status(err)
}

// rebuild pauses or resumes rebuilds, or reports on them.
func (d *Daemon) rebuild(r control.Request) (control.Status, error) {
	var err error
	switch r.Action {
	case "pause":
		err = d.jobs.PauseRebuild()
	case "resume":
		err = d.jobs.ResumeRebuild()
	case "status":
	default:
		err = fmt.Errorf("rebuild %q: use status, pause or resume", r.Action)
	}
	return d.status(err)
}

// member finds a member by slot number or directory.
func (d *Daemon) member(name string) (int, error) {
	st := d.vol.Status()
	if name == "" {
		return 0, errors.New("no member named: give a slot number or a member directory")
	}
	if slot, err := strconv.Atoi(name); err == nil {
		if slot < 0 || slot >= len(st.Members) {
			return 0, fmt.Errorf("no slot %d: the array has slots 0 to %d", slot, len(st.Members)-1)
		}
		return slot, nil
	}
	want, err := control.Canonical(name)
	if err != nil {
		return 0, err
	}
	for _, m := range st.Members {
		if m.Dir == "" {
			continue
		}
		if have, err := control.Canonical(m.Dir); err == nil && have == want {
			return m.Slot, nil
		}
	}
	return 0, fmt.Errorf("%s is not a member of this array: give a slot number or a member directory (lockstep status shows them)", name)
}
