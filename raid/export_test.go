package raid

// Crash closes the members as a killed process leaves them: nothing is
// flushed, and the array is not marked clean. The volume is unusable
// afterwards. Benchmarks use it to time recovery without a child process.
func (v *Volume) Crash() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.closed = true
	close(v.stop)
	v.monitoring.Wait()
	for _, m := range v.members {
		if m != nil && !m.closed.Load() {
			m.m.Data.Close()
			m.m.Meta.Close()
			m.closed.Store(true)
		}
	}
}

// CheckpointEveryStep makes rebuilds checkpoint after every step, for the
// duration of a test.
func CheckpointEveryStep(t interface{ Cleanup(func()) }) {
	old := checkpointEvery
	checkpointEvery = 0
	t.Cleanup(func() { checkpointEvery = old })
}
