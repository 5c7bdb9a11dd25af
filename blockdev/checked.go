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
	n, err := c.dev.ReadAt(p, off)
	if err != nil {
		return n, err
	}
	want := make([]uint32, len(p)/BlockSize)
	if err := c.sums.Lookup(off/BlockSize, want); err != nil {
		return n, fmt.Errorf("checksums for %d bytes at %d: %w", len(p), off, err)
	}
	var bad []int64
	for i, w := range want {
		if Checksum(p[i*BlockSize:(i+1)*BlockSize]) != w {
			bad = append(bad, int64(i))
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
	if err := CheckRange(c.dev.Size(), len(p), off); err != nil {
		return 0, err
	}
	sums := make([]uint32, len(p)/BlockSize)
	for i := range sums {
		sums[i] = Checksum(p[i*BlockSize : (i+1)*BlockSize])
	}
	if err := c.sums.Record(off/BlockSize, sums); err != nil {
		return 0, fmt.Errorf("record checksums for %d bytes at %d: %w", len(p), off, err)
	}
	return c.dev.WriteAt(p, off)
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
