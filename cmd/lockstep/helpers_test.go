package main

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func dialUnix(path string) (net.Conn, error) { return net.DialTimeout("unix", path, 5*time.Second) }

// scrape fetches a Prometheus endpoint and returns one sample's value.
func scrape(addr, sample string) (float64, bool) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == sample {
			v, err := strconv.ParseFloat(value, 64)
			return v, err == nil
		}
	}
	return 0, false
}
