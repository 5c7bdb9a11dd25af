package control

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// serveTest listens for the mount point mnt with handler h, as user owner.
func serveTest(t *testing.T, owner int, h Handler) (mnt string) {
	t.Helper()
	t.Setenv("LOCKSTEP_RUN_DIR", t.TempDir())
	mnt = filepath.Join(t.TempDir(), "mnt")
	canon, err := Canonical(mnt)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Listen(SocketPath(canon), owner, h, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return mnt
}

func echo(_ context.Context, r Request) (any, error) {
	switch r.Cmd {
	case "panic":
		panic("boom")
	case "echo":
		return r, nil
	}
	return nil, errors.New("unknown command")
}

func TestCallAndAnswer(t *testing.T) {
	mnt := serveTest(t, os.Geteuid(), echo)
	var got Request
	if err := Call(mnt, Request{Cmd: "echo", Member: "3"}, &got, 5*time.Second); err != nil || got.Member != "3" {
		t.Fatalf("echo: %+v, %v", got, err)
	}
	if err := Call(mnt, Request{Cmd: "nope"}, nil, 5*time.Second); err == nil || err.Error() != "unknown command" {
		t.Fatalf("unknown command: %v, want the handler's error", err)
	}
	// A handler that panics is an error answer; the server goes on.
	if err := Call(mnt, Request{Cmd: "panic"}, nil, 5*time.Second); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("panic: %v, want an error naming it", err)
	}
	if err := Call(mnt, Request{Cmd: "echo"}, &got, 5*time.Second); err != nil {
		t.Fatalf("after a panic: %v", err)
	}
}

func TestAnotherUserIsRefused(t *testing.T) {
	called := false
	mnt := serveTest(t, os.Geteuid()+4242, func(context.Context, Request) (any, error) { called = true; return nil, nil })
	err := Call(mnt, Request{Cmd: "echo"}, nil, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "may not control this mount") {
		t.Fatalf("a request from another user: %v, want a refusal", err)
	}
	if called {
		t.Fatal("the handler ran for another user's request")
	}
}

func TestNoMount(t *testing.T) {
	t.Setenv("LOCKSTEP_RUN_DIR", t.TempDir())
	err := Call(t.TempDir(), Request{Cmd: CmdStatus}, nil, time.Second)
	if !errors.Is(err, ErrNoMount) {
		t.Fatalf("Call with nothing mounted: %v, want ErrNoMount", err)
	}
}

func TestSecondServerRefused(t *testing.T) {
	mnt := serveTest(t, os.Geteuid(), echo)
	canon, _ := Canonical(mnt)
	if _, err := Listen(SocketPath(canon), os.Geteuid(), echo, quiet); err == nil {
		t.Fatal("a second server took over a live socket")
	}
	if err := Call(mnt, Request{Cmd: "echo"}, nil, 5*time.Second); err != nil {
		t.Fatalf("the first server stopped answering: %v", err)
	}
}
