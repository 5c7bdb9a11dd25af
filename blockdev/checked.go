package blockdev

import "fmt"

// Checked is a Device decorator that records the CRC-32C of every block
// written and verifies it on every read.
type Checked struct {
	dev  Device
	sums *Sums
}

// NewChecked checks dev against the checksum table sums.
func NewChecked(dev Device, sums *Sums) *Checked { return &Checked{dev: dev, sums: sums} }

// Size returns the device's size in bytes.
func (c *Checked) Size() int64 { return c.dev.Size() }

// ReadAt reads and verifies len(p) bytes at off. Blocks that fail
// verification are listed in a *ChecksumError; p is filled all the same.
func (c *Checked) ReadAt(p []byte, off int64) (int, error) {
	return c.ReadvAt([][]byte{p}, off)
}

// ReadvAt reads bufs back to back from off in one call and verifies them.
func (c *Checked) ReadvAt(bufs [][]byte, off int64) (int, error) {
	n, err := ReadvAt(c.dev, bufs, off)
	if err != nil {
		return n, err
	}
	want := make([]uint32, n/BlockSize)
	if err := c.sums.Lookup(off/BlockSize, want); err != nil {
		return n, fmt.Errorf("checksums for %d bytes at %d: %w", n, off, err)
	}
	var bad []int64
	i := 0
	for _, p := range bufs {
		for b := 0; b < len(p); b += BlockSize {
			if Checksum(p[b:b+BlockSize]) != want[i] {
				bad = append(bad, int64(i))
			}
			i++
		}
	}
	if bad != nil {
		return n, &ChecksumError{Off: off, Blocks: bad}
	}
	return n, nil
}

// WriteAt records the checksums of p, then writes it. The checksums are
// recorded even if the write fails, so that a block left holding old data is
// caught as a mismatch instead of being served as current.
func (c *Checked) WriteAt(p []byte, off int64) (int, error) {
	return c.WritevAt([][]byte{p}, off)
}

// WritevAt records the checksums of bufs, then writes them back to back
// from off in one call.
func (c *Checked) WritevAt(bufs [][]byte, off int64) (int, error) {
	if err := checkVector(c.dev.Size(), bufs, off); err != nil {
		return 0, err
	}
	sums := make([]uint32, 0, totalLen(bufs)/BlockSize)
	for _, p := range bufs {
		for b := 0; b < len(p); b += BlockSize {
			sums = append(sums, Checksum(p[b:b+BlockSize]))
		}
	}
	if err := c.sums.Record(off/BlockSize, sums); err != nil {
		return 0, fmt.Errorf("record checksums for %d bytes at %d: %w", totalLen(bufs), off, err)
	}
	return WritevAt(c.dev, bufs, off)
}

// Sync makes the data durable, then the checksums that describe it.
func (c *Checked) Sync() error {
	if err := c.dev.Sync(); err != nil {
		return err
	}
	return c.sums.Flush(true)
}

// Close closes the underlying device. The checksum table belongs to the
// member and is flushed when the member closes.
func (c *Checked) Close() error { return c.dev.Close() }
