package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lockstepfs/lockstep/cmd/lockstep/control"
	"github.com/lockstepfs/lockstep/raid"
)

// The end-to-end tests run the lockstep binary, built with the race
// detector, as a user would: they create arrays, mount them for real and
// drive them with other processes (dd, fio, mkfs.ext4, losetup).

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lockstep-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // an ordinary user runs it too
	binary = filepath.Join(dir, "lockstep")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build lockstep: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: its run directory (control sockets and daemon
// logs), kept apart from every other test's.
type env struct {
	t      *testing.T
	root   string
	runDir string
}

func newEnv(t *testing.T, tools ...string) *env {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse (a kernel with FUSE): ", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the tests mount, and attach loop devices")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (.ci/run installs it: apt-get install fio e2fsprogs fuse3)", tool)
		}
	}
	e := &env{t: t, root: t.TempDir()}
	e.runDir = filepath.Join(e.root, "run")
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(e.runDir, "*.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("daemon log %s:\n%s", l, b)
			}
		}
	})
	return e
}

// run runs the lockstep binary and returns its standard output, failing the
// test if it fails.
func (e *env) run(args ...string) string {
	e.t.Helper()
	out, err := e.try(args...)
	if err != nil {
		e.t.Fatalf("lockstep %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// try runs the lockstep binary; the error carries its standard error.
func (e *env) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(os.Environ(), "LOCKSTEP_RUN_DIR="+e.runDir)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// tool runs another program and fails the test if it fails.
func (e *env) tool(name string, args ...string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// create makes an array of n members in the test's folder.
func (e *env) create(layout string, n int, size string) []string {
	e.t.Helper()
	var dirs []string
	for i := range n {
		dirs = append(dirs, filepath.Join(e.root, fmt.Sprintf("disk%d", i)))
	}
	e.run(append([]string{"create", "--layout", layout, "--chunk", "64KiB", "--size", size}, dirs...)...)
	return dirs
}

// mount mounts the array in the daemon and unmounts it at cleanup, by force
// if it must.
func (e *env) mount(dirs []string, flags ...string) string {
	e.t.Helper()
	mnt := filepath.Join(e.root, "mnt")
	os.MkdirAll(mnt, 0o755)
	args := append(append([]string{"mount", "-d"}, flags...), dirs...)
	e.run(append(args, mnt)...)
	st := e.status(mnt)
	e.t.Cleanup(func() { e.unmount(mnt, st.Mount.PID) })
	return mnt
}

// unmount stops a mount at cleanup: with lockstep umount if it can,
// otherwise by detaching it and killing its daemon.
func (e *env) unmount(mnt string, pid int) {
	_, err := e.try("umount", mnt)
	switch {
	case err == nil:
		waitExit(pid)
	case strings.Contains(err.Error(), "no lockstep mount") && !isMounted(mnt):
		// Unmounted already, by the test.
	default:
		e.t.Errorf("umount %s: %v", mnt, err)
		unix.Unmount(mnt, unix.MNT_DETACH)
		syscall.Kill(pid, syscall.SIGKILL)
		waitExit(pid)
	}
}

// waitExit waits until a process that is not our child is gone.
func waitExit(pid int) {
	for syscall.Kill(pid, 0) == nil {
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond) // polling another process's exit: there is nothing to wait on
	}
}

func (e *env) status(mnt string) control.Status {
	e.t.Helper()
	var st control.Status
	if err := json.Unmarshal([]byte(e.run("status", "--json", mnt)), &st); err != nil {
		e.t.Fatalf("status --json: %v", err)
	}
	return st
}

// waitFor polls the mount's status until cond holds, or fails the test
// after a minute.
func (e *env) waitFor(mnt, what string, cond func(control.Status) bool) control.Status {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := e.status(mnt)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("waited a minute for %s; status: %+v", what, st.Array)
		}
		time.Sleep(20 * time.Millisecond) // polling a daemon's state from outside it
	}
}

// pattern writes n random bytes to a file and returns them.
func (e *env) pattern(name string, n int, seed uint64) (string, []byte) {
	e.t.Helper()
	p := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			p[i+j] = byte(v >> (8 * j))
		}
	}
	path := filepath.Join(e.root, name)
	if err := os.WriteFile(path, p, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path, p
}

// readVolume reads n bytes at off from the volume in a separate process.
func (e *env) readVolume(mnt string, off, n int64) []byte {
	e.t.Helper()
	out := filepath.Join(e.root, "readback")
	e.tool("dd", "if="+filepath.Join(mnt, "volume"), "of="+out, "bs=64K", "iflag=direct,skip_bytes,count_bytes",
		fmt.Sprintf("skip=%d", off), fmt.Sprintf("count=%d", n), "status=none")
	b, err := os.ReadFile(out)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

func TestWriteUnmountRemountRead(t *testing.T) {
	e := newEnv(t)
	dirs := e.create("raid5", 4, "96MiB")
	mnt := e.mount(dirs)
	src, want := e.pattern("pattern", 40<<20, 1)
	const off = 5<<20 + 4096
	e.tool("dd", "if="+src, "of="+filepath.Join(mnt, "volume"), "bs=1M", "oflag=seek_bytes",
		fmt.Sprintf("seek=%d", off), "conv=notrunc,fsync", "status=none")
	st := e.status(mnt)
	e.run("umount", mnt)
	waitExit(st.Mount.PID)
	if _, err := e.try("status", mnt); err == nil {
		t.Fatal("status answers after umount")
	}
	// Remounted, in another order: the bytes are there, and nothing else.
	mnt = e.mount([]string{dirs[2], dirs[0], dirs[3], dirs[1]})
	got := e.readVolume(mnt, 0, 96<<20)
	model := make([]byte, 96<<20)
	copy(model[off:], want)
	if !bytes.Equal(got, model) {
		t.Fatal("after remounting, the volume differs from what was written")
	}
}

func TestExt4OnALoopDevice(t *testing.T) {
	e := newEnv(t, "mkfs.ext4", "e2fsck", "losetup", "fstrim")
	dirs := e.create("raid6", 6, "256MiB")
	mnt := e.mount(dirs, "--writeback-cache")
	loop := strings.TrimSpace(e.tool("losetup", "--find", "--show", "--direct-io=on", filepath.Join(mnt, "volume")))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	e.tool("mkfs.ext4", "-q", "-F", loop)
	fsDir := filepath.Join(e.root, "ext4")
	os.MkdirAll(fsDir, 0o755)
	e.tool("mount", loop, fsDir)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			unix.Unmount(fsDir, unix.MNT_DETACH)
		}
	})
	// A tree of files, copied in with cp, as a user would.
	tree := filepath.Join(e.root, "tree")
	rng := rand.New(rand.NewPCG(7, 7))
	files := map[string][]byte{}
	for i := range 60 {
		rel := filepath.Join(fmt.Sprintf("d%d", i%7), fmt.Sprintf("sub%d", i%3), fmt.Sprintf("f%d", i))
		b := make([]byte, rng.IntN(600<<10))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		files[rel] = b
		os.MkdirAll(filepath.Dir(filepath.Join(tree, rel)), 0o755)
		if err := os.WriteFile(filepath.Join(tree, rel), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	e.tool("cp", "-a", tree, fsDir)
	e.tool("sync")
	// Delete some and trim: the discards reach the engine as punched holes.
	for i := 0; i < 60; i += 3 {
		rel := filepath.Join(fmt.Sprintf("d%d", i%7), fmt.Sprintf("sub%d", i%3), fmt.Sprintf("f%d", i))
		os.Remove(filepath.Join(fsDir, "tree", rel))
		delete(files, rel)
	}
	e.tool("fstrim", fsDir)
	if err := unix.Unmount(fsDir, 0); err != nil {
		t.Fatalf("unmount ext4: %v", err)
	}
	mounted = false
	e.tool("e2fsck", "-fn", loop)
	// Mounted again, every file holds what was copied in.
	e.tool("mount", "-o", "ro", loop, fsDir)
	mounted = true
	for rel, want := range files {
		got, err := os.ReadFile(filepath.Join(fsDir, "tree", rel))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: differs from what was copied in (err %v)", rel, err)
		}
	}
	// The volume cannot be unmounted while the loop device holds it.
	if _, err := e.try("umount", mnt); err == nil {
		t.Fatal("umount succeeded while a loop device holds the volume")
	}
	if st := e.status(mnt); st.Array.State != raid.ArrayOptimal {
		t.Errorf("array %s after the refused umount, want OPTIMAL and serving", st.Array.State)
	}
}

func TestFioVerifiesWhileAMemberIsFenced(t *testing.T) {
	e := newEnv(t, "fio")
	dirs := e.create("raid6", 6, "256MiB")
	mnt := e.mount(dirs, "--metrics", "127.0.0.1:0")
	st := e.status(mnt)
	wait := startFio(t, mnt, "160M")
	// Fence a member once fio is a third of the way through its writes.
	waitMetric(t, st.Mount.Metrics, `lockstep_request_bytes_total{op="write"}`, 50<<20)
	e.run("fail", mnt, dirs[3])
	j := wait().Jobs[0]
	if j.Error != 0 || j.Write.IOBytes != 160<<20 || j.Read.IOBytes != 160<<20 {
		t.Fatalf("fio: error %d, wrote %d and verified %d bytes, want 0 and 160 MiB each", j.Error, j.Write.IOBytes, j.Read.IOBytes)
	}
	st = e.status(mnt)
	if st.Array.State != raid.ArrayDegraded || st.Array.Members[3].State != "FAULTED" {
		t.Fatalf("after lockstep fail: array %s, member 3 %s; want DEGRADED and FAULTED", st.Array.State, st.Array.Members[3].State)
	}
	events := e.run("events", mnt)
	if !strings.Contains(events, "member 3 fence ONLINE -> FAULTED: failed by the operator") {
		t.Errorf("events do not show the fence:\n%s", events)
	}
}

// waitMetric polls a mount's metrics endpoint until a sample reaches min.
func waitMetric(t *testing.T, addr, sample string, min float64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		if v, ok := scrape(addr, sample); ok && v >= min {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling another process's progress
	}
	t.Fatalf("%s never reached %v", sample, min)
}

func TestVanishedMemberIsFencedAndTheMountServes(t *testing.T) {
	e := newEnv(t)
	dirs := e.create("raid1", 2, "32MiB")
	mnt := e.mount(dirs, "--health-timeout", "600ms", "--failure-level", "1")
	src, want := e.pattern("pattern", 8<<20, 2)
	vol := filepath.Join(mnt, "volume")
	e.tool("dd", "if="+src, "of="+vol, "bs=1M", "conv=notrunc,fsync", "status=none")
	moved := dirs[1] + ".away"
	if err := os.Rename(dirs[1], moved); err != nil {
		t.Fatal(err)
	}
	st := e.waitFor(mnt, "member 1 fenced", func(st control.Status) bool { return st.Array.Members[1].State == "FAULTED" })
	if st.Array.State != raid.ArrayDegraded {
		t.Errorf("array %s with member 1 gone, want DEGRADED", st.Array.State)
	}
	// Still serving: what was written reads back, and new writes land.
	if got := e.readVolume(mnt, 0, 8<<20); !bytes.Equal(got, want) {
		t.Fatal("with a member gone, the volume differs from what was written")
	}
	src2, want2 := e.pattern("pattern2", 4<<20, 3)
	e.tool("dd", "if="+src2, "of="+vol, "bs=1M", "seek=8", "conv=notrunc,fsync", "status=none")
	if got := e.readVolume(mnt, 8<<20, 4<<20); !bytes.Equal(got, want2) {
		t.Fatal("a write after the member went away does not read back")
	}
	if ev := e.run("events", mnt); !strings.Contains(ev, "member 1 fence") {
		t.Errorf("no fence event:\n%s", ev)
	}
}

func TestControlSocketRefusesBadRequests(t *testing.T) {
	e := newEnv(t)
	dirs := e.create("raid1", 2, "8MiB")
	mnt := e.mount(dirs)
	st := e.status(mnt)
	fi, err := os.Stat(st.Mount.Socket)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket %s: mode %v (err %v), want 0600", st.Mount.Socket, fi.Mode(), err)
	}
	for _, req := range []string{`{"cmd": "status"`, `{"cmd": "reboot"}`, "not json at all\n", `{"cmd": "fail", "member": "9"}`,
		`{"cmd": "fail", "member": "/nowhere"}`, `{"cmd": "status", "extra": 1}`, strings.Repeat("x", 100<<10)} {
		resp := rawRequest(t, st.Mount.Socket, req)
		if resp.Error == "" {
			t.Errorf("request %.40q was answered without an error: %s", req, resp.Result)
		}
	}
	// Still serving, and still healthy.
	if st := e.status(mnt); st.Array.State != raid.ArrayOptimal {
		t.Errorf("array %s after bad requests, want OPTIMAL", st.Array.State)
	}
	// The last copy is not fenced, and nothing changes.
	e.run("fail", mnt, "0")
	if _, err := e.try("fail", mnt, "1"); err == nil || !strings.Contains(err.Error(), "too few members to serve the data") {
		t.Errorf("fencing the last copy: %v, want a refusal: too few members", err)
	}
	if st := e.status(mnt); st.Array.Members[1].State != "ONLINE" {
		t.Errorf("member 1 %s after a refused fence, want ONLINE", st.Array.Members[1].State)
	}
}

// rawRequest sends one line to a control socket and decodes the answer.
func rawRequest(t *testing.T, socket, line string) control.Response {
	t.Helper()
	c, err := dialUnix(socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if !strings.HasSuffix(line, "\n") {
		line += "\n"
	}
	c.Write([]byte(line))
	var resp control.Response
	if err := json.NewDecoder(c).Decode(&resp); err != nil {
		t.Fatalf("no answer to %.40q: %v", line, err)
	}
	return resp
}

func TestSignalFlushesAndUnmounts(t *testing.T) {
	e := newEnv(t)
	dirs := e.create("mirror:3", 3, "16MiB")
	mnt := filepath.Join(e.root, "mnt")
	os.MkdirAll(mnt, 0o755)
	// In the foreground, as a service manager runs it.
	fg := exec.Command(binary, append(append([]string{"mount", "--metrics", "127.0.0.1:0"}, dirs...), mnt)...)
	fg.Env = append(os.Environ(), "LOCKSTEP_RUN_DIR="+e.runDir)
	var stdout, stderr bytes.Buffer
	fg.Stdout, fg.Stderr = &stdout, &stderr
	if err := fg.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if fg.ProcessState == nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
			fg.Process.Kill()
			fg.Wait()
		}
	})
	st := e.waitForMount(mnt)
	src, want := e.pattern("pattern", 6<<20, 4)
	// Buffered writes without fsync: the signal must flush them.
	e.tool("dd", "if="+src, "of="+filepath.Join(mnt, "volume"), "bs=1M", "conv=notrunc", "status=none")
	body := scrapeAll(t, st.Mount.Metrics)
	for _, want := range []string{`lockstep_array_state{array="lockstep",state="OPTIMAL"} 1`,
		`lockstep_member_state{dir="` + dirs[2] + `",slot="2",state="ONLINE"} 1`,
		`lockstep_member_errors_total{kind="checksum",slot="0"} 0`, `lockstep_request_duration_seconds_bucket{op="write"`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if err := fg.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := fg.Wait(); err != nil {
		t.Fatalf("mount after SIGTERM: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "volume flushed and closed") {
		t.Errorf("the log does not say the volume was flushed:\n%s", stderr.String())
	}
	if isMounted(mnt) {
		t.Fatal("still mounted after SIGTERM")
	}
	// Every member holds the data: read each alone (the others moved away).
	for i := range dirs {
		mnt := e.mount([]string{dirs[i]})
		if got := e.readVolume(mnt, 0, 6<<20); !bytes.Equal(got, want) {
			t.Fatalf("member %d alone does not hold what was written before SIGTERM", i)
		}
		e.run("umount", mnt)
	}
}

func TestUmountAfterTheDaemonDied(t *testing.T) {
	e := newEnv(t)
	dirs := e.create("raid5", 3, "16MiB")
	mnt := e.mount(dirs)
	src, want := e.pattern("pattern", 6<<20, 5)
	e.tool("dd", "if="+src, "of="+filepath.Join(mnt, "volume"), "bs=1M", "conv=notrunc,fsync", "status=none")
	st := e.status(mnt)
	syscall.Kill(st.Mount.PID, syscall.SIGKILL)
	waitExit(st.Mount.PID)
	if !isMounted(mnt) {
		t.Fatal("the mount vanished with its daemon; this test needs it left behind")
	}
	out := e.run("umount", mnt)
	if !strings.Contains(out, "its daemon was gone") || isMounted(mnt) {
		t.Fatalf("umount of an orphan mount: %q, mounted %v", out, isMounted(mnt))
	}
	// The array mounts again (the members' locks died with the daemon),
	// resyncs what the crash may have left in disagreement, and holds
	// what was flushed.
	mnt = e.mount(dirs)
	if ev := e.run("events", mnt); !strings.Contains(ev, "array recover: unclean shutdown:") {
		t.Errorf("no recovery event after the crash:\n%s", ev)
	}
	if got := e.readVolume(mnt, 0, 6<<20); !bytes.Equal(got, want) {
		t.Fatal("after the crash and recovery, what was flushed differs")
	}
}

// waitForMount polls until a mount started in the foreground answers.
func (e *env) waitForMount(mnt string) control.Status {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var st control.Status
		out, err := e.try("status", "--json", mnt)
		if err == nil && json.Unmarshal([]byte(out), &st) == nil {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("the mount never answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond) // polling another process's start
	}
}

// isMounted reports whether anything is mounted at dir.
func isMounted(dir string) bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func scrapeAll(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// An ordinary user mounts through fusermount3, and only that user controls
// the mount: root's requests are refused by the peer-credential check.
func TestOrdinaryUserMountsWithFusermount(t *testing.T) {
	newEnv(t, "fusermount3")
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode().Perm()&0o006 != 0o006 {
		t.Skip("needs /dev/fuse open to every user (mode 0666, as udev makes it; .ci/run sets it)")
	}
	const nobody = 65534
	home, err := os.MkdirTemp("", "lockstep-user")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	if err := errors.Join(os.Chmod(home, 0o755), os.Chown(home, nobody, nobody)); err != nil {
		t.Fatal(err)
	}
	as := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Dir = home
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LOCKSTEP_RUN_DIR=" + filepath.Join(home, "run")}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	mnt := filepath.Join(home, "mnt")
	for _, args := range [][]string{
		{binary, "create", "--layout", "raid1", "--size", "8MiB", "d0", "d1"},
		{"mkdir", "mnt"},
		{binary, "mount", "-d", "d0", "d1", "mnt"},
	} {
		if _, err := as(args...); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if isMounted(mnt) {
			if _, err := as(binary, "umount", mnt); err != nil {
				t.Error(err)
				unix.Unmount(mnt, unix.MNT_DETACH)
			}
		}
	})
	if _, err := as("dd", "if=/dev/urandom", "of=mnt/volume", "bs=1M", "count=4", "conv=notrunc,fsync", "status=none"); err != nil {
		t.Fatal(err)
	}
	out, err := as(binary, "status", "mnt")
	if err != nil || !strings.Contains(out, "OPTIMAL") {
		t.Fatalf("status as the owner: %v\n%s", err, out)
	}
	// Root reaches the socket (file modes do not stop root) but is refused.
	root := exec.Command(binary, "status", mnt)
	root.Env = append(os.Environ(), "LOCKSTEP_RUN_DIR="+filepath.Join(home, "run"))
	rootOut, err := root.CombinedOutput()
	if err == nil || !strings.Contains(string(rootOut), "user 0 may not control this mount") {
		t.Fatalf("status as root: %v %s, want a refusal", err, rootOut)
	}
	if _, err := as(binary, "umount", "mnt"); err != nil {
		t.Fatal(err)
	}
	if isMounted(mnt) {
		t.Fatal("still mounted after umount")
	}
}

// TestSparesRebuildAndScrubThroughTheCLI drives failover onto a hot spare,
// replace, spare add and remove, and scrub through the commands, with the
// data checked against what was written.
func TestSparesRebuildAndScrubThroughTheCLI(t *testing.T) {
	e := newEnv(t)
	spare := filepath.Join(e.root, "spare")
	var dirs []string
	for i := range 4 {
		dirs = append(dirs, filepath.Join(e.root, fmt.Sprintf("disk%d", i)))
	}
	e.run(append([]string{"create", "--layout", "raid5", "--chunk", "64KiB", "--size", "96MiB", "--spare", spare}, dirs...)...)
	mnt := e.mount(dirs)
	src, want := e.pattern("data", 40<<20, 7)
	e.tool("dd", "if="+src, "of="+filepath.Join(mnt, "volume"), "bs=1M", "oflag=direct", "conv=notrunc", "status=none")

	// A fenced member: the spare takes over and is rebuilt.
	e.run("fail", mnt, "2")
	out := e.run("rebuild", "status", "--wait", mnt)
	if !strings.Contains(out, "no rebuild under way; array OPTIMAL") {
		t.Fatalf("rebuild status --wait:\n%s", out)
	}
	st := e.status(mnt)
	if m := st.Array.Members[2]; m.State != "ONLINE" || m.Dir != spare || len(st.Array.Spares) != 0 {
		t.Fatalf("after the failover: member 2 %s in %s, spares %v", m.State, m.Dir, st.Array.Spares)
	}
	if got := e.readVolume(mnt, 0, int64(len(want))); !bytes.Equal(got, want) {
		t.Fatal("the volume differs from what was written after the rebuild")
	}
	events := e.run("events", mnt)
	for _, s := range []string{"member 2 failover FAULTED -> REBUILDING", "member 2 rebuild REBUILDING -> ONLINE"} {
		if !strings.Contains(events, s) {
			t.Errorf("events do not show %q:\n%s", s, events)
		}
	}

	// A check scrub over everything written finds nothing.
	out = e.run("scrub", "start", "--check", "--wait", mnt)
	if !strings.Contains(out, "scrub (check): finished") || !strings.Contains(out, "nothing found") || !strings.Contains(out, "0 never verified") {
		t.Fatalf("scrub start --check --wait:\n%s", out)
	}
	st = e.status(mnt)
	if st.Scrub == nil || st.Scrub.State != "finished" || st.Scrub.Done < int64(len(want)) || st.Coverage.Never != 0 {
		t.Fatalf("scrub status: %+v, coverage %+v", st.Scrub, st.Coverage)
	}
	if _, err := e.try("scrub", "pause", mnt); err == nil || !strings.Contains(err.Error(), "no scrub is under way") {
		t.Fatalf("scrub pause with none running: %v", err)
	}

	// Spares come and go; replace puts a new member in.
	spare2 := filepath.Join(e.root, "spare2")
	e.run("spare", "add", mnt, spare2)
	if st := e.status(mnt); !slices.Equal(st.Array.Spares, []string{spare2}) {
		t.Fatalf("spares after spare add: %v", st.Array.Spares)
	}
	if _, err := e.try("spare", "add", mnt, dirs[1]); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("spare add of a member in use: %v", err)
	}
	e.run("spare", "remove", mnt, spare2)
	newDir := filepath.Join(e.root, "new0")
	e.run("replace", mnt, "0", newDir)
	e.run("rebuild", "status", "--wait", mnt)
	st = e.status(mnt)
	if st.Array.State != raid.ArrayOptimal || st.Array.Members[0].Dir != newDir || len(st.Array.Spares) != 0 {
		t.Fatalf("after replace: %s, member 0 in %s, spares %v", st.Array.State, st.Array.Members[0].Dir, st.Array.Spares)
	}
	if _, err := e.try("replace", mnt, "9", newDir); err == nil || !strings.Contains(err.Error(), "no slot 9") {
		t.Fatalf("replace of slot 9: %v", err)
	}
	if got := e.readVolume(mnt, 0, int64(len(want))); !bytes.Equal(got, want) {
		t.Fatal("the volume differs from what was written after the replace")
	}
}
