package blockdev

import (
	"container/list"
	"encoding/binary"
	"hash/crc32"
	"sync"
)

// castagnoli is the CRC-32C table; Go computes it with SSE4.2 where present.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C of one block.
func Checksum(block []byte) uint32 { return crc32.Checksum(block, castagnoli) }

// zeroSum is the checksum of a block of zeros: the checksum of every block
// that was never written, since data files start zeroed.
var zeroSum = Checksum(make([]byte, BlockSize))

const (
	sumsPerPage   = 1024 // one page covers 4 MiB of member data in 4 KiB of metadata
	maxCleanPages = 1024 // pages kept cached per member when clean (4 MiB)
	maxDirtyPages = 4096 // dirty pages past which they are written without sync
)

// Sums is the table of a member's block checksums. It keeps pages of it in
// memory and writes changed pages to the member's metadata in one batch at
// Flush. A page that was never stored holds the checksum of a zero block.
type Sums struct {
	meta    *Meta
	flushMu sync.Mutex // serialises Flush so that pages are stored in order

	mu    sync.Mutex
	pages map[int64]*sumPage
	clean *list.List // clean pages, least recently used at the front
	dirty map[int64]*sumPage
}

type sumPage struct {
	idx  int64
	sums [sumsPerPage]uint32
	elem *list.Element // in clean, when the page is clean
}

// NewSums returns the checksum table stored in meta.
func NewSums(meta *Meta) *Sums {
	return &Sums{meta: meta, pages: map[int64]*sumPage{}, clean: list.New(), dirty: map[int64]*sumPage{}}
}

func pageKey(idx int64) []byte {
	return binary.BigEndian.AppendUint64(append([]byte(nil), prefixChecks...), uint64(idx))
}

// page returns the cached page idx, loading it if needed. s.mu is held.
func (s *Sums) page(idx int64) (*sumPage, error) {
	if p, ok := s.pages[idx]; ok {
		if p.elem != nil {
			s.clean.MoveToBack(p.elem)
		}
		return p, nil
	}
	p := &sumPage{idx: idx}
	v, ok, err := s.meta.Get(pageKey(idx))
	if err != nil {
		return nil, err
	}
	for i := range p.sums {
		if ok && len(v) == 4*sumsPerPage {
			p.sums[i] = binary.LittleEndian.Uint32(v[4*i:])
		} else {
			p.sums[i] = zeroSum
		}
	}
	s.pages[idx] = p
	p.elem = s.clean.PushBack(p)
	for s.clean.Len() > maxCleanPages {
		old := s.clean.Remove(s.clean.Front()).(*sumPage)
		delete(s.pages, old.idx)
	}
	return p, nil
}

// Lookup fills out with the checksums of the blocks from block on.
func (s *Sums) Lookup(block int64, out []uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < len(out); {
		b := block + int64(i)
		p, err := s.page(b / sumsPerPage)
		if err != nil {
			return err
		}
		i += copy(out[i:], p.sums[b%sumsPerPage:])
	}
	return nil
}

// Record sets the checksums of the blocks from block on.
func (s *Sums) Record(block int64, sums []uint32) error {
	return s.set(block, int64(len(sums)), func(dst []uint32, i int64) int { return copy(dst, sums[i:]) })
}

// Zero sets the checksums of n blocks from block on to that of a zero
// block.
func (s *Sums) Zero(block, n int64) error {
	return s.set(block, n, func(dst []uint32, i int64) int {
		dst = dst[:min(int64(len(dst)), n-i)]
		for j := range dst {
			dst[j] = zeroSum
		}
		return len(dst)
	})
}

// set fills the checksums of n blocks from block on, page by page: fill
// writes the sums from the i-th on into dst and says how many it wrote.
func (s *Sums) set(block, n int64, fill func(dst []uint32, i int64) int) error {
	s.mu.Lock()
	for i := int64(0); i < n; {
		b := block + i
		p, err := s.page(b / sumsPerPage)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		i += int64(fill(p.sums[b%sumsPerPage:], i))
		if p.elem != nil {
			s.clean.Remove(p.elem)
			p.elem = nil
			s.dirty[p.idx] = p
		}
	}
	spill := len(s.dirty) > maxDirtyPages
	s.mu.Unlock()
	if spill {
		return s.Flush(false)
	}
	return nil
}

// Flush stores every changed page in one batch; with sync it is durable on
// return.
func (s *Sums) Flush(sync bool) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.mu.Lock()
	b := s.meta.NewBatch()
	val := make([]byte, 4*sumsPerPage)
	for idx, p := range s.dirty {
		for i, c := range p.sums {
			binary.LittleEndian.PutUint32(val[4*i:], c)
		}
		b.Set(pageKey(idx), val)
		p.elem = s.clean.PushBack(p)
		delete(s.dirty, idx)
	}
	s.mu.Unlock()
	return b.Commit(sync)
}
