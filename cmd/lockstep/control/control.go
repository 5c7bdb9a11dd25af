// Package control is the control API of a running mount: a Unix socket per
// mount point, owner-only, over which every command but mount talks to the
// daemon. A request is one line of JSON and so is its answer; the daemon
// answers a malformed or refused request with an error and keeps serving.
package control

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/lockstepfs/lockstep/blockdev"
	"github.com/lockstepfs/lockstep/raid"
	"github.com/lockstepfs/lockstep/scrub"
)

// Commands a mount answers.
const (
	CmdStatus  = "status"  // the array, its members and running jobs: a Status
	CmdEvents  = "events"  // the event history, oldest first: []raid.Event
	CmdFail    = "fail"    // fence Member on the operator's word
	CmdApprove = "approve" // let Member's failover proceed
	CmdUmount  = "umount"  // stop serving, flush, unmount and exit
	CmdScrub   = "scrub"   // Action start (Check), status, pause, resume or cancel: a Status
	CmdRebuild = "rebuild" // Action status, pause or resume: a Status
	CmdSpare   = "spare"   // Action add or remove the spare in Dir: a Status
	CmdReplace = "replace" // put a new member, made in Dir, in Member's place: a Status
	CmdInject  = "inject"  // Action add (Fault to Member's disk) or clear (Member's, or all): a Status
)

// Request is one command to a mount.
type Request struct {
	Cmd string `json:"cmd"`
	// Member names a member by slot number or directory, for the commands
	// about one.
	Member string `json:"member,omitempty"`
	// Action is what to do, for the commands that do several things.
	Action string `json:"action,omitempty"`
	// Dir is a directory, for spare and replace.
	Dir string `json:"dir,omitempty"`
	// Check makes a scrub find but not repair.
	Check bool `json:"check,omitempty"`
	// Fault is the fault to inject.
	Fault *blockdev.Rule `json:"fault,omitempty"`
}

// Response is a mount's answer: a result, or an error saying what was
// wrong.
type Response struct {
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// ErrNoMount says no mount answers at a mount point.
var ErrNoMount = errors.New("no lockstep mount")

// RunDir is the directory that holds the control sockets: $LOCKSTEP_RUN_DIR
// if set, /run/lockstep for root, $XDG_RUNTIME_DIR/lockstep or
// /tmp/lockstep-UID for other users.
func RunDir() string {
	if d := os.Getenv("LOCKSTEP_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/lockstep"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "lockstep")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("lockstep-%d", os.Geteuid()))
}

// Canonical returns the absolute path of a mount point, with links in its
// parent resolved, without touching the mount point itself (a hung mount
// must not hang the command that would stop it).
func Canonical(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", mountpoint, err)
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", mountpoint, err)
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}

// SocketPath returns the control socket of the mount at a canonical mount
// point: named after a hash of the path, which keeps it within the length a
// socket address allows whatever the path.
func SocketPath(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return filepath.Join(RunDir(), hex.EncodeToString(sum[:12])+".sock")
}

// MountInfo describes a running mount.
type MountInfo struct {
	Mountpoint string    `json:"mountpoint"`
	PID        int       `json:"pid"`
	Since      time.Time `json:"since"`
	Socket     string    `json:"socket"`
	Metrics    string    `json:"metrics,omitempty"` // the address of the Prometheus endpoint
	// Settings are the mount's options that the engine does not report
	// itself: writeback cache, consistency, rebuild rate.
	Settings map[string]string `json:"settings"`
}

// Job is a background job under way (rebuild, resync, scrub).
type Job struct {
	Kind  string `json:"kind"`
	Slot  int    `json:"slot"` // the member rebuilt; -1 for a scrub
	State string `json:"state"`
	Done  int64  `json:"done_bytes"`
	Total int64  `json:"total_bytes"`
	// Rate is the recent rate, 0 while the job does not run.
	Rate float64 `json:"rate_bytes_per_second"`
	// Progress is Done/Total, from 0 to 1, and 1 only once the job is done.
	Progress float64 `json:"progress"`
	// ETA is the time left at the recent rate, 0 if unknown.
	ETA time.Duration `json:"eta_ns"`
}

// NewJob fills in a job's progress and time left from what it has done.
func NewJob(kind string, slot int, state string, done, total int64, rate float64) Job {
	j := Job{Kind: kind, Slot: slot, State: state, Done: done, Total: total, Rate: rate}
	if total > 0 {
		j.Progress = float64(done) / float64(total)
	}
	if j.Progress >= 1 && state != "finished" {
		j.Progress = 0.999 // never 100% before it is done
	}
	if rate > 0 && total > done {
		j.ETA = time.Duration(float64(total-done) / rate * float64(time.Second))
	}
	return j
}

// Status is a mount's answer to CmdStatus.
type Status struct {
	Mount MountInfo   `json:"mount"`
	Array raid.Status `json:"array"`
	// Jobs are the background jobs under way or paused.
	Jobs []Job `json:"jobs"`
	// Scrub is the scrub under way or the last one, if any.
	Scrub *scrub.Scrub `json:"scrub,omitempty"`
	// Coverage says when the written regions were last verified.
	Coverage scrub.Coverage `json:"coverage"`
	// RebuildPaused says rebuilds are held back (lockstep rebuild pause).
	RebuildPaused bool `json:"rebuild_paused,omitempty"`
	// Faults are the faults injected into member disks (lockstep inject).
	Faults []Fault `json:"faults"`
}

// Fault is what lockstep inject has done to one member disk.
type Fault struct {
	Slot     int                    `json:"slot"` // -1 for a disk no longer in the array
	Dir      string                 `json:"dir"`
	Vanished bool                   `json:"vanished,omitempty"`
	Rules    []blockdev.ActiveFault `json:"rules"`
}
