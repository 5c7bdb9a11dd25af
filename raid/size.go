package raid

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize reads a size such as 4096, 64K, 64KiB, 1.5G or 10GB. K, M, G, T,
// P and their KiB forms are powers of 1024; KB, MB, GB, TB and PB are powers
// of 1000.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (K, M, G, T, KiB, MB, ...)", s)
	}
	mult := float64(1)
	if unit != "" && unit != "B" {
		base := 1024.0
		p := strings.IndexByte("KMGTP", unit[0])
		rest := unit[1:]
		switch {
		case p < 0:
			return 0, fmt.Errorf("size %q: unknown unit %q", s, unit)
		case rest == "" || rest == "IB":
		case rest == "B":
			base = 1000
		default:
			return 0, fmt.Errorf("size %q: unknown unit %q", s, unit)
		}
		for range p + 1 {
			mult *= base
		}
	}
	v := f * mult
	if v > 1<<62 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	if v != float64(int64(v)) {
		return 0, fmt.Errorf("size %q is not a whole number of bytes", s)
	}
	return int64(v), nil
}

// FormatSize prints a byte count with a binary unit, e.g. 64KiB or 1.5GiB.
func FormatSize(n int64) string {
	const units = "KMGTP"
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	v, u := float64(n), -1
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + string(units[u]) + "iB"
}
