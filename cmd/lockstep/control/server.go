package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxRequest is the longest request line a server reads.
const maxRequest = 64 << 10

// ioTimeout bounds how long a client may take to send its request.
const ioTimeout = 10 * time.Second

// Handler answers a request with a result to encode as JSON, or an error.
type Handler func(ctx context.Context, r Request) (any, error)

// Server serves the control socket of one mount.
type Server struct {
	ln    *net.UnixListener
	path  string
	owner int
	h     Handler
	log   *slog.Logger
	wg    sync.WaitGroup
	ctx   context.Context
	stop  context.CancelFunc
}

// Listen creates the control socket at path (mode 0600, its directory 0700)
// and serves requests from processes of user owner with h until Close. It
// refuses to take over a socket that a live mount still answers on.
func Listen(path string, owner int, h Handler, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another mount is serving there", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale control socket: %w", err)
	}
	old := unix.Umask(0o177) // the socket is created 0600, never wider
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{ln: ln, path: path, owner: owner, h: h, log: log, ctx: ctx, stop: stop}
	s.wg.Go(s.accept)
	return s, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Close stops accepting, cancels requests under way, waits for them, and
// removes the socket.
func (s *Server) Close() error {
	s.stop()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("control socket stopped accepting", "err", err)
			}
			return
		}
		s.wg.Go(func() { s.serve(c) })
	}
}

// serve answers the one request of a connection.
func (s *Server) serve(c *net.UnixConn) {
	defer c.Close()
	answer := func(resp Response) {
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if err := json.NewEncoder(c).Encode(resp); err != nil {
			s.log.Warn("control: answer not delivered", "err", err)
		}
	}
	fail := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		s.log.Warn("control: request refused", "reason", msg)
		answer(Response{Error: msg})
	}
	uid, err := peerUID(c)
	if err != nil {
		fail("cannot tell who is asking: %v", err)
		return
	}
	if uid != s.owner {
		fail("user %d may not control this mount: it belongs to user %d", uid, s.owner)
		return
	}
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	line, err := bufio.NewReader(io.LimitReader(c, maxRequest)).ReadBytes('\n')
	if err != nil {
		fail("request not read: %v (send one line of JSON ending in a newline, at most %d bytes)", err, maxRequest)
		return
	}
	var r Request
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		fail("malformed request: %v", err)
		return
	}
	result, err := s.call(r)
	if err != nil {
		answer(Response{Error: err.Error()})
		return
	}
	raw, err := json.Marshal(result)
	if err != nil {
		fail("answer not encoded: %v", err)
		return
	}
	answer(Response{Result: raw})
}

// call runs the handler, turning a panic into an error answer: a bad
// request must not take the mount down.
func (s *Server) call(r Request) (result any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("control: handler panicked", "cmd", r.Cmd, "panic", p)
			err = fmt.Errorf("internal error serving %q: %v", r.Cmd, p)
		}
	}()
	return s.h(s.ctx, r)
}

// peerUID returns the user of the process at the other end of c.
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return int(cred.Uid), nil
}
