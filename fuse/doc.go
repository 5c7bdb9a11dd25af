// Package fuse will show a lockstep volume through the kernel as one regular
// file, MOUNTPOINT/volume, translating each request to the engine and each
// engine error to one errno. It is empty until the mount lands.
package fuse
