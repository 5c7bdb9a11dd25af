package raid

// CheckpointEveryStep makes rebuilds do one region a step and checkpoint
// in every step (the progress of the steps before it), for the duration
// of a test.
func CheckpointEveryStep(t interface{ Cleanup(func()) }) {
	old, batch := checkpointEvery, rebuildBatch
	checkpointEvery, rebuildBatch = 0, 1
	t.Cleanup(func() { checkpointEvery, rebuildBatch = old, batch })
}

// CheckpointNever keeps rebuilds from checkpointing while they run, for the
// duration of a test: a crash puts them back where they started.
func CheckpointNever(t interface{ Cleanup(func()) }) {
	every, parts := checkpointEvery, checkpointParts
	checkpointEvery, checkpointParts = 1<<62, 1
	t.Cleanup(func() { checkpointEvery, checkpointParts = every, parts })
}
