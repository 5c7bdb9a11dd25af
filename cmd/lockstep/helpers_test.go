package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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

// fioReport is the part of fio's JSON report the tests read.
type fioReport struct {
	Jobs []struct {
		Error int `json:"error"`
		Write struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"write"`
		Read struct {
			IOBytes int64 `json:"io_bytes"`
		} `json:"read"`
	} `json:"jobs"`
}

// startFio starts fio writing size bytes of the volume at random and then
// verifying them; wait returns its report.
func startFio(t *testing.T, mnt, size string) (wait func() fioReport) {
	fio := exec.Command("fio", "--name=verify", "--filename="+filepath.Join(mnt, "volume"), "--size="+size,
		"--rw=randwrite", "--bs=64k", "--direct=1", "--ioengine=libaio", "--iodepth=8",
		"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--output-format=json")
	var out, errb bytes.Buffer
	fio.Stdout, fio.Stderr = &out, &errb
	if err := fio.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited { // the test failed first: let go of the volume
			fio.Process.Kill()
			fio.Wait()
		}
	})
	return func() fioReport {
		waited = true
		done := make(chan struct{})
		timer := time.AfterFunc(4*time.Minute, func() {
			select {
			case <-done:
			default:
				t.Errorf("fio still running after 4 minutes; killing it")
				fio.Process.Kill()
			}
		})
		defer timer.Stop()
		err := fio.Wait()
		close(done)
		if err != nil {
			t.Fatalf("fio: %v\n%s\n%s", err, errb.String(), out.String())
		}
		var res fioReport
		if err := json.Unmarshal(out.Bytes(), &res); err != nil || len(res.Jobs) != 1 {
			t.Fatalf("fio's report: %v\n%s", err, out.String())
		}
		return res
	}
}
