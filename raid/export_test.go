package raid

// CheckpointEveryStep makes rebuilds do one region a step and checkpoint
// after every step, for the duration of a test.
func CheckpointEveryStep(t interface{ Cleanup(func()) }) {
	old, batch := checkpointEvery, rebuildBatch
	checkpointEvery, rebuildBatch = 0, 1
	t.Cleanup(func() { checkpointEvery, rebuildBatch = old, batch })
}
