package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRatios(t *testing.T) {
	in := `goos: linux
BenchmarkIO/seqwrite-1M/raw-2      100   1 ns/op   1000.00 MB/s   1.000 limit-factor
BenchmarkIO/seqwrite-1M/raw#01-2   100   1 ns/op   3000.00 MB/s   1.000 limit-factor
BenchmarkIO/seqwrite-1M/raw#02-2   100   1 ns/op   2000.00 MB/s   1.000 limit-factor
BenchmarkIO/seqwrite-1M/raid6-6-2  100   1 ns/op   1200.00 MB/s   0.6667 limit-factor
BenchmarkEncode/bare/4+2-64K-2     100   1 ns/op   40000.00 MB/s
BenchmarkEncode/engine/4+2-64K-2   100   1 ns/op   36000.00 MB/s
BenchmarkSlowMember/raid1/healthy-2   100   1 ns/op   4.00 MB/s   0.1000 p50-ms   0.5000 p99-ms
BenchmarkSlowMember/raid1/slowed-2    100   1 ns/op   3.00 MB/s   0.1200 p50-ms   50.00 p99-ms
BenchmarkBackground/lat/healthy-2             1   1 ns/op   0.1000 p50-ms   0.2000 p99-ms
BenchmarkBackground/lat/degraded-idle-2       1   1 ns/op   0.1500 p50-ms   0.4000 p99-ms
BenchmarkBackground/lat/rebuild-2             1   1 ns/op   0.1500 p50-ms   0.5000 p99-ms
`
	var out bytes.Buffer
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		"BenchmarkIO/seqwrite-1M/raid6-6                    1200       2000     0.60      0.90",
		"BenchmarkEncode/engine/4+2-64K                    36000      40000     0.90",
		"p50 0.120 ms (healthy 0.100, x1.20)  p99 50.000 ms (healthy 0.500, x100.00)\n",
		"BenchmarkBackground/lat/degraded-idle        p50 0.150 ms (healthy 0.100, x1.50)  p99 0.400 ms (healthy 0.200, x2.00)\n",
		"BenchmarkBackground/lat/rebuild              p50 0.150 ms (healthy 0.100, x1.50)  p99 0.500 ms (healthy 0.200, x2.50) (degraded-idle 0.400, x1.25)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "/raw ") || strings.Contains(got, "/bare/") {
		t.Errorf("baselines are printed as results:\n%s", got)
	}
}

func TestNoResults(t *testing.T) {
	if err := run(strings.NewReader("PASS\n"), &bytes.Buffer{}); err == nil {
		t.Fatal("no error for input without results")
	}
}
