package cli

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// run executes the root command with args and returns its output.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := New()
	var out, errb bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errb)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errb.String(), err
}

// tree lists every path under root with its size.
func tree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(p + " " + info.Mode().String() + "\n")
		}
		return nil
	})
	return b.String()
}

func TestCreateRefusesBadInput(t *testing.T) {
	root := t.TempDir()
	d := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, filepath.Join(root, n))
		}
		return out
	}
	if _, _, err := run(t, append([]string{"create", "--layout", "raid1", "--size", "1MiB"}, d("used0", "used1")...)...); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "mnt"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LOCKSTEP_RUN_DIR", t.TempDir())
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no layout", append([]string{"create", "--size", "1MiB"}, d("a", "b")...), "--layout is required"},
		{"unknown layout", append([]string{"create", "--layout", "raid9"}, d("a", "b")...), `invalid layout: "raid9"`},
		{"chunk not a power of two", append([]string{"create", "--layout", "raid5", "--chunk", "48KiB"}, d("a", "b", "c")...), "invalid chunk size: 49152 bytes: use a power of two"},
		{"chunk not a size", append([]string{"create", "--layout", "raid5", "--chunk", "big"}, d("a", "b", "c")...), `--chunk: size "big"`},
		{"too few for raid6", append([]string{"create", "--layout", "raid6"}, d("a", "b", "c")...), "layout raid6 needs at least 4 members, got 3"},
		{"K+M beyond the codec", append([]string{"create", "--layout", "rs:250+10"}, d("a", "b")...), "beyond the codec's limit of 256"},
		{"size that does not fit", append([]string{"create", "--layout", "raid5", "--size", "900PiB"}, d("a", "b", "c")...), "choose a smaller --size"},
		{"zero size", append([]string{"create", "--layout", "raid5", "--size", "0"}, d("a", "b", "c")...), "--size: must be more than zero"},
		{"size not a block multiple", append([]string{"create", "--layout", "raid5", "--size", "1000"}, d("a", "b", "c")...), "not a positive multiple of 4KiB"},
		{"directory already a member", append([]string{"create", "--layout", "raid1"}, d("used0", "a")...), "already holds a lockstep member"},
		{"directory twice", append([]string{"create", "--layout", "raid1"}, d("a", "a")...), "is listed twice"},
		{"no directories", []string{"create", "--layout", "raid1"}, "requires at least 1 arg"},
		{"status of a non-member", []string{"status", root}, "is neither a lockstep mount nor a member directory"},
		{"status of a non-member among others", []string{"status", root, filepath.Join(root, "used0")}, "is not a lockstep member"},
		{"mount with a bad read policy", append([]string{"mount", "--read-policy", "maybe"}, d("used0", "used1", "mnt")...), `--read-policy "maybe": use fast or vote`},
		{"mount with a bad failure level", append([]string{"mount", "--failure-level", "9"}, d("used0", "used1", "mnt")...), "--failure-level or --health-timeout"},
		{"mount with a bad consistency", append([]string{"mount", "--consistency", "fast"}, d("used0", "used1", "mnt")...), "use journal, bitmap or resync"},
		{"mount with a rate without MAX", append([]string{"mount", "--rebuild-rate", "10MiB"}, d("used0", "used1", "mnt")...), "use MIN:MAX"},
		{"mount with MAX below MIN", append([]string{"mount", "--rebuild-rate", "100MiB:10MiB"}, d("used0", "used1", "mnt")...), "is below minimum"},
		{"mount with a bad log format", append([]string{"mount", "--log-format", "xml"}, d("used0", "used1", "mnt")...), "use text or json"},
		{"mount with a log file in the foreground", append([]string{"mount", "--log-file", "x"}, d("used0", "used1", "mnt")...), "--log-file goes with --daemon"},
		{"mount on a missing mount point", append([]string{"mount"}, d("used0", "used1", "nowhere")...), "is not a directory: create it"},
		{"mount of a non-member", append([]string{"mount"}, d("mnt", "mnt")...), "is not a lockstep member"},
		{"mount of one directory twice", append([]string{"mount"}, d("used0", "used0", "mnt")...), "is listed twice"},
		{"umount of no mount", []string{"umount", root}, "no lockstep mount"},
		{"fail on no mount", []string{"fail", root, "1"}, "no lockstep mount"},
		{"events of no mount", []string{"events", root}, "no lockstep mount"},
		{"approve on no mount", []string{"failover", "approve", root, "0"}, "no lockstep mount"},
		{"status of half another array", []string{"status", filepath.Join(root, "used0"), filepath.Join(root, "used0")}, "is listed twice"},
		{"bench with a bad depth", []string{"bench", "--depth", "0"}, "--depth 0: give 1 to 1024"},
		{"bench with a bad size", []string{"bench", "--size", "1500KiB"}, "give a whole number of MiB"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := tree(t, root)
			stdout, _, err := run(t, c.args...)
			if err == nil {
				t.Fatalf("accepted: %s", stdout)
			}
			if msg := err.Error(); !strings.Contains(msg, c.want) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line containing %q", msg, c.want)
			}
			if after := tree(t, root); after != before {
				t.Fatalf("a refused command changed the disk:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

var (
	uuidRE = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
)

// golden compares got, with UUIDs and the temporary root made stable, to
// testdata/name.golden.
func golden(t *testing.T, name, root, got string) {
	t.Helper()
	got = uuidRE.ReplaceAllString(strings.ReplaceAll(got, root, "ROOT"), "UUID")
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		t.Fatalf("output differs from %s:\n--- got\n%s--- want\n%s", path, got, want)
	}
}

func TestCreateAndStatus(t *testing.T) {
	root := t.TempDir()
	var dirs []string
	for i := range 4 {
		dirs = append(dirs, filepath.Join(root, "disk"+string(rune('0'+i))))
	}
	out, _, err := run(t, append([]string{"create", "--layout", "raid6", "--size", "8MiB", "--chunk", "16KiB", "--name", "golden"}, dirs...)...)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "create", root, out)
	// Directories in any order give the same report.
	shuffled := []string{dirs[2], dirs[0], dirs[3], dirs[1]}
	out, _, err = run(t, append([]string{"status"}, shuffled...)...)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status", root, out)
	out, _, err = run(t, append([]string{"status", "--json"}, dirs[:3]...)...)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "status-degraded.json", root, out)

	_, stderr, err := run(t, "create", "--layout", "raid0", "--size", "1MiB", filepath.Join(root, "x"), filepath.Join(root, "y"))
	if err != nil || !strings.Contains(stderr, "warning: raid0 has no redundancy") {
		t.Fatalf("raid0 create: %v, stderr %q", err, stderr)
	}
}

func TestBenchVerifiesData(t *testing.T) {
	out, _, err := run(t, "bench", "--dir", t.TempDir(), "--layout", "raid5", "--members", "3", "--size", "8MiB",
		"--duration", "100ms", "--depth", "4", "--json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"workload": "seq write 1MiB"`, `"workload": "rand read 4KiB"`, `"wrong_blocks": 0`} {
		if !strings.Contains(out, want) {
			t.Fatalf("bench --json lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"verified_bytes": 0,`) {
		t.Fatalf("bench verified nothing:\n%s", out)
	}
}

// TestBinaryExitsNonZeroWithOneLine builds the command and checks what a
// user sees for bad input: one line on stderr and a non-zero exit.
func TestBinaryExitsNonZeroWithOneLine(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "lockstep")
	if out, err := exec.Command("go", "build", "-o", bin, "..").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "create", "--layout", "raid5", "--chunk", "3KiB", filepath.Join(t.TempDir(), "a"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("exit: %v", err)
	}
	if lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "lockstep: ") {
		t.Fatalf("stderr %q: want one line starting with 'lockstep: '", stderr.String())
	}
}
