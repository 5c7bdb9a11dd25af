// Package scrub runs lockstep's background jobs on a mounted volume:
// rebuilds and resyncs of members (the engine decides when one is needed
// and holds its cursor), and scrubs, which read every written stripe, check
// checksums and the agreement of copies and parity, and repair what they
// find unless run in check mode.
//
// One Runner per volume takes one idempotent, checkpointed step (a region
// of a few MiB) at a time, rebuilds before scrubs, between a minimum and a
// maximum rate: at the maximum while users are idle, down to the minimum
// while they are busy (md's speed_limit_min and speed_limit_max). A scrub's
// progress and result are kept in the members' metadata, so that a scrub
// cut short by a restart resumes where it was, and the last result is
// shown by status.
package scrub
