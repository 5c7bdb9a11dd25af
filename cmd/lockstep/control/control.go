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

	"github.com/lockstepfs/lockstep/raid"
)

// Commands a mount answers.
const (
	CmdStatus  = "status"  // the array, its members and running jobs: a Status
	CmdEvents  = "events"  // the event history, oldest first: []raid.Event
	CmdFail    = "fail"    // fence Member on the operator's word
	CmdApprove = "approve" // let Member's failover proceed
	CmdUmount  = "umount"  // stop serving, flush, unmount and exit
)

// Request is one command to a mount.
type Request struct {
	Cmd string `json:"cmd"`
	// Member names a member by slot number or directory, for the commands
	// about one.
	Member string `json:"member,omitempty"`
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

// Job is a background job under way (rebuild, scrub, resync).
type Job struct {
	Kind     string  `json:"kind"`
	Slot     int     `json:"slot,omitempty"`
	State    string  `json:"state"`
	Done     int64   `json:"done_bytes"`
	Total    int64   `json:"total_bytes"`
	Rate     float64 `json:"rate_bytes_per_second"`
	Progress float64 `json:"progress"` // from 0 to 1
}

// Status is a mount's answer to CmdStatus.
type Status struct {
	Mount MountInfo   `json:"mount"`
	Array raid.Status `json:"array"`
	Jobs  []Job       `json:"jobs"`
}
