package raid

import (
	"os"
	"runtime"
	"sync"
)

// Procs is the GOMAXPROCS a process that serves a Volume should run with,
// given the runtime's default: twice it, plus four.
//
// Member I/O is blocking preads and pwrites, and a goroutine in a system
// call keeps its P until the runtime's monitor takes it back, which can be
// milliseconds later when the process was idle a moment before. With only
// as many Ps as CPUs, a request ready to run waits behind other requests'
// system calls: on 2 CPUs, 4 KiB random reads at queue depth 4 had a p99 of
// 2 to 6 ms, against the disk's own 0.2 ms; with 4 Ps their p99 was the
// disk's. A degraded array's small read is four member reads at once
// (raid6 with a member gone), so the system calls in flight are several
// times the queue depth: with 4 Ps such reads at queue depth 4 had a p99 of
// 0.62-0.74 ms, with 8 Ps 0.45-0.55 ms (healthy reads at queue depth 6:
// 0.80-0.86 ms with 4 Ps, 0.30-0.33 ms with 8; 16 Ps gained nothing more).
// Not many more than that, because the garbage collector gives a quarter of
// the Ps to marking, each a thread that competes for the CPUs.
func Procs(defaultProcs int) int { return 2*defaultProcs + 4 }

var procsOnce sync.Once

// UseProcs sets GOMAXPROCS to Procs of the runtime's default, once in a
// process, unless the GOMAXPROCS environment variable chose it.
func UseProcs() {
	procsOnce.Do(func() {
		if os.Getenv("GOMAXPROCS") == "" {
			runtime.GOMAXPROCS(Procs(runtime.GOMAXPROCS(0)))
		}
	})
}
