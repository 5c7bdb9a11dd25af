package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/cmd/lockstep/daemon"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/scrub"
)

// Environment variables between a detaching lockstep mount and the daemon
// it starts.
const (
	envChild   = "LOCKSTEP_DAEMON_CHILD" // set in the daemon: serve, do not detach again
	envReadyFD = "LOCKSTEP_READY_FD"     // the pipe the daemon reports readiness on
)

type mountFlags struct {
	readPolicy, consistency, rebuildRate, metrics string
	failureLevel                                  int
	healthTimeout                                 time.Duration
	autoFailover, writeback, direct, allowOther   bool
	detach, debugFUSE                             bool
	logFormat, logLevel, logFile                  string
}

func newMount() *cobra.Command {
	var f mountFlags
	def := raid.DefaultPolicy()
	cmd := &cobra.Command{
		Use:   "mount [flags] DIR... MOUNTPOINT",
		Short: "Assemble an array and serve it as MOUNTPOINT/volume",
		Long: `Assemble the array from its member directories and serve the volume as one
file, MOUNTPOINT/volume, until lockstep umount MOUNTPOINT, SIGINT or SIGTERM,
which flush the volume, unmount and close the members. It serves in the
foreground; with --daemon it detaches once the mount is ready (exit status 0)
or reports why it is not (exit status 1). As root it mounts directly; other
users need fusermount3 (Debian's fuse3 package).

Every other command reaches the running mount through its control socket,
found from MOUNTPOINT.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config(args)
			if err != nil {
				return err
			}
			if f.detach && os.Getenv(envChild) == "" {
				return detach(cmd, cfg, f.logFile)
			}
			return serve(cmd, cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.readPolicy, "read-policy", "fast", "fast (one copy, checksum-checked) or vote (every copy, majority wins)")
	fl.IntVar(&f.failureLevel, "failure-level", def.FailureLevel, "which conditions fence a member, 0 (never automatically) to 5 (also when slow)")
	fl.DurationVar(&f.healthTimeout, "health-timeout", def.HealthTimeout, "a member that does not answer a probe for this long is unresponsive")
	fl.BoolVar(&f.autoFailover, "auto-failover", def.AutoFailover, "fail over to a spare at once; without it a fenced member waits for lockstep failover approve")
	fl.StringVar(&f.consistency, "consistency", "", "crash recovery: journal (parity layouts' default: no write hole), bitmap (mirrors' default) or resync")
	fl.StringVar(&f.rebuildRate, "rebuild-rate", "4MiB:0", "rebuild and scrub rate MIN:MAX per second (MAX 0: unlimited)")
	fl.BoolVar(&f.writeback, "writeback-cache", false, "let the kernel cache buffered writes until fsync (faster buffered writes; data is durable only at fsync, as on a disk)")
	fl.BoolVar(&f.direct, "direct-io", true, "open the members' data files with O_DIRECT, bypassing the page cache")
	fl.BoolVar(&f.allowOther, "allow-other", false, "let other users reach the volume file (ordinary users need user_allow_other in /etc/fuse.conf)")
	fl.StringVar(&f.metrics, "metrics", "", "serve Prometheus metrics at ADDR (host:port) under /metrics")
	fl.BoolVarP(&f.detach, "daemon", "d", false, "detach once the mount is ready")
	fl.StringVar(&f.logFormat, "log-format", "text", "log as text or json")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFile, "log-file", "", "with --daemon, where the daemon logs (default: next to its control socket)")
	fl.BoolVar(&f.debugFUSE, "debug-fuse", false, "log every FUSE request")
	fl.MarkHidden("debug-fuse")
	return cmd
}

// config validates the flags and arguments; it touches nothing.
func (f mountFlags) config(args []string) (daemon.Config, error) {
	dirs, mountpoint := args[:len(args)-1], args[len(args)-1]
	var cfg daemon.Config
	pol := raid.DefaultPolicy()
	pol.FailureLevel, pol.HealthTimeout, pol.AutoFailover = f.failureLevel, f.healthTimeout, f.autoFailover
	if err := pol.Validate(); err != nil {
		return cfg, fmt.Errorf("--failure-level or --health-timeout: %w", err)
	}
	rp := raid.ReadPolicy(f.readPolicy)
	if rp != raid.ReadFast && rp != raid.ReadVote {
		return cfg, fmt.Errorf("--read-policy %q: use fast or vote", f.readPolicy)
	}
	switch raid.Consistency(f.consistency) {
	case "", raid.ConsistencyJournal, raid.ConsistencyBitmap, raid.ConsistencyResync:
	default:
		return cfg, fmt.Errorf("--consistency %q: use journal, bitmap or resync", f.consistency)
	}
	rate, err := scrub.ParseRate(f.rebuildRate)
	if err != nil {
		return cfg, fmt.Errorf("--rebuild-rate: %w", err)
	}
	if f.logFormat != "text" && f.logFormat != "json" {
		return cfg, fmt.Errorf("--log-format %q: use text or json", f.logFormat)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: use debug, info, warn or error", f.logLevel)
	}
	if f.logFile != "" && !f.detach {
		return cfg, errors.New("--log-file goes with --daemon: in the foreground the mount logs to standard error")
	}
	if fi, err := os.Stat(mountpoint); err != nil || !fi.IsDir() {
		return cfg, fmt.Errorf("mount point %s is not a directory: create it (mkdir %s) or check the path", mountpoint, mountpoint)
	}
	cfg = daemon.Config{
		Dirs:       dirs,
		Mountpoint: mountpoint,
		Settings: map[string]string{"rebuild_rate": f.rebuildRate,
			"writeback_cache": strconv.FormatBool(f.writeback), "direct_io": strconv.FormatBool(f.direct)},
		Metrics: f.metrics,
		Rate:    &rate,
		Logger:  newLogger(os.Stderr, f.logFormat, level),
	}
	cfg.Volume.Policy, cfg.Volume.ReadPolicy, cfg.Volume.Direct = pol, rp, f.direct
	cfg.Volume.Consistency = raid.Consistency(f.consistency)
	cfg.Mount.WritebackCache, cfg.Mount.AllowOther, cfg.Mount.Debug = f.writeback, f.allowOther, f.debugFUSE
	return cfg, nil
}

func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	o := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

// serve runs the mount in this process until it is stopped.
func serve(cmd *cobra.Command, cfg daemon.Config) error {
	ready := readyPipe()
	d, err := daemon.Start(cfg)
	if err != nil {
		if ready != nil {
			fmt.Fprintf(ready, "error: %v\n", err)
			ready.Close()
		}
		return err
	}
	info := d.Info()
	if ready != nil {
		fmt.Fprintln(ready, "ready")
		ready.Close()
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "serving %s/volume (control socket %s); stop with lockstep umount %s or Ctrl-C\n",
			info.Mountpoint, info.Socket, info.Mountpoint)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return d.Wait(ctx)
}

// readyPipe returns the pipe to report readiness on, in a daemon started by
// detach.
func readyPipe() *os.File {
	fd, err := strconv.Atoi(os.Getenv(envReadyFD))
	if err != nil || os.Getenv(envChild) == "" {
		return nil
	}
	return os.NewFile(uintptr(fd), "ready")
}

// detach starts this command again as a daemon in its own session, logging
// to a file, and waits until it reports the mount ready or failed.
func detach(cmd *cobra.Command, cfg daemon.Config, logFile string) error {
	canon, err := control.Canonical(cfg.Mountpoint)
	if err != nil {
		return err
	}
	if logFile == "" {
		logFile = strings.TrimSuffix(control.SocketPath(canon), ".sock") + ".log"
	}
	if err := os.MkdirAll(control.RunDir(), 0o700); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	log, err := os.OpenFile(logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("--log-file: %w", err)
	}
	defer log.Close()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the lockstep executable: %w", err)
	}
	child := exec.Command(exe, os.Args[1:]...)
	child.Env = append(os.Environ(), envChild+"=1", envReadyFD+"=3")
	child.Stdout, child.Stderr, child.ExtraFiles = log, log, []*os.File{w}
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the daemon: %w", err)
	}
	w.Close()
	line, _ := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ready":
		fmt.Fprintf(cmd.OutOrStdout(), "serving %s/volume (pid %d, log %s)\n", canon, child.Process.Pid, logFile)
		child.Process.Release()
		return nil
	case strings.HasPrefix(line, "error: "):
		child.Wait()
		return errors.New(strings.TrimPrefix(line, "error: "))
	}
	err = child.Wait()
	return fmt.Errorf("the daemon exited (%v) before the mount was ready: see %s", err, logFile)
}
