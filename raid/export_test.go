package raid

// CheckpointEveryStep makes rebuilds checkpoint after every step, for the
// duration of a test.
func CheckpointEveryStep(t interface{ Cleanup(func()) }) {
	old := checkpointEvery
	checkpointEvery = 0
	t.Cleanup(func() { checkpointEvery = old })
}
