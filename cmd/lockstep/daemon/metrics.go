package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lockstepfs/lockstep/fuse"
	"github.com/lockstepfs/lockstep/raid"
)

// metrics counts the mount's requests (it is the mount's fuse.Observer) and
// reads the array's state and counters from the volume at each scrape.
type metrics struct {
	vol      *raid.Volume
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	latency  *prometheus.HistogramVec

	arrayState, memberState, memberErrors, memberRepairs, memberSlow, generation *prometheus.Desc
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockstep_requests_total",
			Help: "Requests served through the mount, by operation and result."}, []string{"op", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lockstep_request_bytes_total",
			Help: "Bytes read, written and discarded through the mount."}, []string{"op"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lockstep_request_duration_seconds",
			Help:    "Time to serve a request through the mount, by operation.",
			Buckets: prometheus.ExponentialBuckets(20e-6, 2.5, 14)}, []string{"op"}),
		arrayState: prometheus.NewDesc("lockstep_array_state",
			"1 for the array's current state (OPTIMAL, DEGRADED, REBUILDING, SUSPENDED).", []string{"array", "state"}, nil),
		generation: prometheus.NewDesc("lockstep_array_generation",
			"The array's generation, bumped at every membership change.", []string{"array"}, nil),
		memberState: prometheus.NewDesc("lockstep_member_state",
			"1 for each member's current state (ONLINE, FAULTED, OFFLINE, ...).", []string{"slot", "dir", "state"}, nil),
		memberErrors: prometheus.NewDesc("lockstep_member_errors_total",
			"A member's errors since it was created: read, write and checksum.", []string{"slot", "kind"}, nil),
		memberRepairs: prometheus.NewDesc("lockstep_member_repairs_total",
			"Blocks rewritten on a member because they were found bad.", []string{"slot"}, nil),
		memberSlow: prometheus.NewDesc("lockstep_member_slow_ios_total",
			"I/Os of a member that took far longer than its peers'.", []string{"slot"}, nil),
	}
}

// Observe records one request served by the mount.
func (m *metrics) Observe(op fuse.Op, n int, took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	} else {
		m.bytes.WithLabelValues(string(op)).Add(float64(n))
	}
	m.requests.WithLabelValues(string(op), result).Inc()
	m.latency.WithLabelValues(string(op)).Observe(took.Seconds())
}

// Describe sends the descriptions of the state metrics.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.arrayState, m.generation, m.memberState, m.memberErrors, m.memberRepairs, m.memberSlow} {
		ch <- d
	}
}

// Collect reads the array's state now.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	st := m.vol.Status()
	ch <- prometheus.MustNewConstMetric(m.arrayState, prometheus.GaugeValue, 1, st.Array, st.State)
	ch <- prometheus.MustNewConstMetric(m.generation, prometheus.GaugeValue, float64(st.Generation), st.Array)
	for _, ms := range st.Members {
		slot := strconv.Itoa(ms.Slot)
		ch <- prometheus.MustNewConstMetric(m.memberState, prometheus.GaugeValue, 1, slot, ms.Dir, ms.State)
		c := ms.Counters
		for kind, v := range map[string]int64{"read": c.ReadErrors, "write": c.WriteErrors, "checksum": c.ChecksumErrors} {
			ch <- prometheus.MustNewConstMetric(m.memberErrors, prometheus.CounterValue, float64(v), slot, kind)
		}
		ch <- prometheus.MustNewConstMetric(m.memberRepairs, prometheus.CounterValue, float64(c.Repairs), slot)
		ch <- prometheus.MustNewConstMetric(m.memberSlow, prometheus.CounterValue, float64(c.SlowIOs), slot)
	}
}

// metricsServer is the HTTP endpoint that serves /metrics.
type metricsServer struct {
	addr string
	srv  *http.Server
}

func serveMetrics(addr string, m *metrics, log *slog.Logger) (*metricsServer, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m, m.requests, m.bytes, m.latency,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics endpoint %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	s := &metricsServer{addr: ln.Addr().String(), srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	return s, nil
}

func (s *metricsServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
}
