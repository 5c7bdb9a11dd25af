// Package blockdev is the seam between lockstep's RAID engine and the disks it
// keeps a volume on.
//
// A member disk is a directory (the mount point of a drive). It holds a data
// file preallocated to the member's capacity and a pebble database with the
// member's metadata: its label, the CRC-32C of every 4 KiB block it stores,
// and the engine's other records. Metadata travels with its disk, so there is
// no single metadata store to lose.
//
// The engine sees a member's data through [Device]: fixed-size, block-aligned
// ReadAt, WriteAt, Sync and Close. Implementations are stacked as decorators,
// bottom to top:
//
//	File (or Mem)  →  Faulty (injected faults, tests only)  →  Checked (CRC-32C)
//
// Faults plug in below the checksum layer, so injected bit rot travels the
// same detection path as real rot: a block whose contents do not match the
// checksum recorded when it was written comes back with a [*ChecksumError],
// and the engine serves it from redundancy.
package blockdev
