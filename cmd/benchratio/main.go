// Command benchratio reads `go test -bench` output and prints each figure
// beside its baseline from the same run, as ratios. It is what `make bench`
// shows.
//
// Benchmarks are grouped by name: in "BenchmarkIO/seqwrite-1M/raid6-6" the
// last element is the target and the rest the family. A throughput family's
// baseline is its target named "raw" or "none" (or, for an "engine" family,
// the same target in the "bare" family); a latency family's (p50-ms,
// p99-ms) is its target named "healthy", and also the one named
// "degraded-idle" where there is one (a degraded array with nothing in the
// background: what md calls idle); a recovery family's (recovery-s)
// its target named "clean". Figures are medians over repeated runs (-count,
// or sub-benchmarks run again, which Go names with a #01 suffix). A
// benchmark that reports a "limit-factor" metric (the share of raw
// bandwidth its layout can use) also gets the ratio to that limit.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// name matches a result line's name, without the #NN and -GOMAXPROCS
// suffixes.
var name = regexp.MustCompile(`^(Benchmark\S+?)(?:#\d+)?(?:-\d+)?$`)

// result is every run of one benchmark: metric unit → values.
type result map[string][]float64

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchratio:", err)
		os.Exit(1)
	}
}

// parse reads the result lines: name, iterations, then value-unit pairs.
func parse(in io.Reader) (map[string]result, []string, error) {
	results := map[string]result{}
	var order []string
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || len(f)%2 != 0 {
			continue
		}
		m := name.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		r := results[m[1]]
		if r == nil {
			r = result{}
			results[m[1]] = r
			order = append(order, m[1])
		}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				r[f[i+1]] = append(r[f[i+1]], v)
			}
		}
	}
	return results, order, sc.Err()
}

func run(in io.Reader, out io.Writer) error {
	results, order, err := parse(in)
	if err != nil {
		return err
	}
	printed := 0
	for _, n := range order {
		i := strings.LastIndexByte(n, '/')
		if i < 0 {
			continue
		}
		family, target := n[:i], n[i+1:]
		r := results[n]
		switch {
		case len(r["MB/s"]) > 0 && target != "raw" && target != "none" && !strings.HasSuffix(family, "/bare") && len(r["p50-ms"]) == 0:
			base := results[family+"/raw"]
			if base == nil {
				base = results[family+"/none"]
			}
			if base == nil {
				base = results[strings.Replace(family, "/engine", "/bare", 1)+"/"+target]
			}
			if printed == 0 {
				fmt.Fprintf(out, "%-44s %10s %10s %8s %9s\n", "throughput (median MB/s)", "MB/s", "baseline", "ratio", "of limit")
			}
			printed++
			mb := median(r["MB/s"])
			if base == nil {
				fmt.Fprintf(out, "%-44s %10.0f %10s\n", n, mb, "-")
				continue
			}
			b := median(base["MB/s"])
			limit := ""
			if f := r["limit-factor"]; len(f) > 0 && median(f) != 1 {
				limit = fmt.Sprintf("%9.2f", mb/(b*median(f)))
			}
			fmt.Fprintf(out, "%-44s %10.0f %10.0f %8.2f %9s\n", n, mb, b, mb/b, limit)
		case len(r["recovery-s"]) > 0 && target != "clean":
			base := results[family+"/clean"]
			if base == nil {
				continue
			}
			fmt.Fprintf(out, "%-44s %.3f s (clean open %.3f s)\n", n, median(r["recovery-s"]), median(base["recovery-s"]))
			printed++
		case len(r["p50-ms"]) > 0 && target != "healthy":
			base := results[family+"/healthy"]
			if base == nil {
				continue
			}
			p50, p99 := median(r["p50-ms"]), median(r["p99-ms"])
			b50, b99 := median(base["p50-ms"]), median(base["p99-ms"])
			fmt.Fprintf(out, "%-44s p50 %.3f ms (healthy %.3f, x%.2f)  p99 %.3f ms (healthy %.3f, x%.2f)",
				n, p50, b50, p50/b50, p99, b99, p99/b99)
			if idle := results[family+"/degraded-idle"]; idle != nil && target != "degraded-idle" {
				i99 := median(idle["p99-ms"])
				fmt.Fprintf(out, " (degraded-idle %.3f, x%.2f)", i99, p99/i99)
			}
			fmt.Fprintln(out)
			printed++
		}
	}
	if printed == 0 {
		return fmt.Errorf("no benchmark results to compare in the input")
	}
	return nil
}
