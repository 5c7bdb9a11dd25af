package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
)

// Call sends a request to the mount at mountpoint and decodes its result
// into result (unless nil). It waits up to timeout for the answer.
func Call(mountpoint string, r Request, result any, timeout time.Duration) error {
	canon, err := Canonical(mountpoint)
	if err != nil {
		return err
	}
	path := SocketPath(canon)
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w at %s (no control socket %s): mount it with lockstep mount", ErrNoMount, canon, path)
		}
		return fmt.Errorf("control socket of %s: %w", canon, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	// A mount that refuses the caller answers at once, without reading the
	// request: its answer is worth reading even if sending failed.
	sendErr := json.NewEncoder(c).Encode(r)
	var resp Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		if sendErr != nil {
			return fmt.Errorf("send %s request to %s: %w", r.Cmd, canon, sendErr)
		}
		return fmt.Errorf("answer of the mount at %s to %s: %w", canon, r.Cmd, err)
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(resp.Result, result); err != nil {
		return fmt.Errorf("answer of the mount at %s to %s: %w", canon, r.Cmd, err)
	}
	return nil
}
