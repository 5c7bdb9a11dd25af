// Package raid is lockstep's engine: it keeps one virtual volume on a set of
// member devices (see package blockdev) and never returns a byte it cannot
// prove.
//
// # Layout
//
// A [Layout] spreads each stripe over the members: Data chunks of user data,
// each in Copies copies, plus Parity Reed-Solomon chunks (raid0, mirror:N,
// raid10, rs:K+M and their aliases). Parity layouts rotate chunks across the
// members from stripe to stripe; mirrors do not, so that a mirror set always
// sits on the same members. The volume's byte off lives in stripe
// off/(Data*chunk), data chunk (off mod Data*chunk)/chunk, at the same offset
// on every member (stripe*chunk).
//
// # Reads and writes
//
// [Volume.ReadAt] and [Volume.WriteAt] take any offset and length. A request
// locks the stripes it touches (shared for reads, exclusive for writes, in
// ascending order) and merges the member I/O of all of them into one vectored
// call per member. Every block's CRC-32C is checked on read; a block that
// fails, or whose member fails or is kept out, is served from another copy or
// rebuilt with Reed-Solomon, column by column, and then repaired in place.
// Beyond the redundancy a read fails with an error wrapping
// [ErrUnrecoverable]. A partial-stripe write reads whichever is less: the old
// data and parity (read-modify-write, with reedsolomon's Update) or the rest
// of the stripe (reconstruct-write). A member whose write fails keeps the
// checksum of the new data, so its stale contents are never served.
//
// With [ReadVote], mirrors read every copy and take the majority of identical
// contents (a checksum decides between two, or when there is no majority);
// parity layouts check each block column against the parity and, with two or
// more parity chunks, locate a chunk that disagrees although its checksum
// passes.
//
// # Failures
//
// The failover policy is a deterministic core, [Policy]: it takes what was
// seen (I/O errors, checksum mismatches, slow reads, probe results, restart
// outcomes, the operator's requests) with the time it was seen, and returns
// actions (restart, fence, failover, sit out, suspend, resume). It never
// reads a clock or touches a disk, so tests drive it with a fake clock. The
// volume is its shell: it counts and reports, probes every member every
// HealthTimeout/3 on its own goroutine, restarts members (reopen, check the
// label, probe), hedges reads around slow members, and records every change
// as an [Event] in every remaining member, bumping the generation in their
// labels whenever membership changes, so that a member that missed writes
// (fenced, offline, or absent from a degraded assembly) is stale at the next
// assembly and never trusted again. Below quorum the volume refuses I/O with
// [ErrSuspended] and resumes when members answer again.
//
// # Durability
//
// Data and checksums are durable once [Volume.Flush] returns. Until the
// write-intent log lands, a crash may leave unflushed blocks reading as
// errors (never as wrong data).
package raid
