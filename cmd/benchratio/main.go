// Command benchratio reads `go test -bench` output and prints each figure
// beside its baseline from the same run, as ratios. It is what `make bench`
// shows.
//
// Benchmarks are grouped by name: in "BenchmarkIO/seqwrite-1M/raid6-6" the
// last element is the target and the rest the family. Each family's
// baseline is its target named "raw" or "bare". Figures are the median
// MB/s over repeated runs (-count, or sub-benchmarks run again, which Go
// names with a #01 suffix). A benchmark that reports a
// "limit-factor" metric (the share of raw bandwidth its layout can use) also
// gets the ratio to that limit.
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

var line = regexp.MustCompile(`^(Benchmark\S+?)(?:#\d+)?(?:-\d+)?\s+\d+\s+.*?([\d.]+) MB/s(.*)$`)
var factorRE = regexp.MustCompile(`([\d.]+) limit-factor`)

type result struct {
	mbps   []float64
	factor float64
}

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

func run(in io.Reader, out io.Writer) error {
	results := map[string]*result{}
	var order []string
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		r := results[m[1]]
		if r == nil {
			r = &result{factor: 1}
			results[m[1]] = r
			order = append(order, m[1])
		}
		r.mbps = append(r.mbps, v)
		if f := factorRE.FindStringSubmatch(m[3]); f != nil {
			r.factor, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(order) == 0 {
		return fmt.Errorf("no benchmark results with MB/s in the input")
	}
	fmt.Fprintf(out, "%-44s %10s %10s %8s %9s\n", "benchmark (median MB/s)", "MB/s", "baseline", "ratio", "of limit")
	for _, name := range order {
		i := strings.LastIndexByte(name, '/')
		if i < 0 {
			continue
		}
		family, target := name[:i], name[i+1:]
		if target == "raw" || target == "bare" {
			continue
		}
		base := results[family+"/raw"]
		if base == nil {
			base = results[strings.Replace(family, "/engine", "/bare", 1)+"/"+target]
		}
		r := results[name]
		mb := median(r.mbps)
		if base == nil {
			fmt.Fprintf(out, "%-44s %10.0f %10s\n", name, mb, "-")
			continue
		}
		b := median(base.mbps)
		limit := ""
		if r.factor != 1 {
			limit = fmt.Sprintf("%9.2f", mb/(b*r.factor))
		}
		fmt.Fprintf(out, "%-44s %10.0f %10.0f %8.2f %9s\n", name, mb, b, mb/b, limit)
	}
	return nil
}
