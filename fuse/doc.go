// Package fuse shows a lockstep volume through the kernel as one regular
// file, MOUNTPOINT/volume, of the volume's size. Reads and writes go
// straight to the engine with no lock of their own, fsync becomes a flush,
// and fallocate's punch hole a discard; every engine error becomes EIO,
// which the engine has already logged and recorded as an event.
//
// The same server over a plain file (File) is the baseline that benchmarks
// hold the mount against: the most any FUSE design of this shape can give.
package fuse
