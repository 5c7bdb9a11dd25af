package raid

import (
	"fmt"
	"testing"

	"github.com/klauspost/reedsolomon"

	"github.com/lockstepfs/lockstep/blockdev"
)

// BenchmarkEncode compares the engine's full-stripe encode path (pooled
// parity buffers, the stripe's data taken in place from the request) with a
// bare reedsolomon Encode on the same shard sizes, one stripe per goroutine
// in both.
func BenchmarkEncode(b *testing.B) {
	for _, g := range []struct{ k, m int }{{4, 2}, {8, 2}, {10, 4}} {
		for _, chunk := range []int64{64 << 10, 1 << 20} {
			name := fmt.Sprintf("%d+%d-%dK", g.k, g.m, chunk>>10)
			b.Run("bare/"+name, func(b *testing.B) {
				enc, err := reedsolomon.New(g.k, g.m)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(g.k) * chunk)
				b.RunParallel(func(pb *testing.PB) {
					shards := reedsolomon.AllocAligned(g.k+g.m, int(chunk))
					for pb.Next() {
						if err := enc.Encode(shards); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
			b.Run("engine/"+name, func(b *testing.B) {
				l := Layout{Name: "bench", Members: g.k + g.m, Data: g.k, Copies: 1, Parity: g.m}
				v := &Volume{geo: newGeometry(l, chunk, 64*chunk*int64(g.k))}
				v.bufs.New = func() any { p := blockdev.AllocAligned(int(chunk)); return &p }
				var err error
				if v.codec, err = newCodec(g.k, g.m); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(g.k) * chunk)
				b.RunParallel(func(pb *testing.PB) {
					bySlot := make([]*span, g.k)
					for d := range bySlot {
						bySlot[d] = &span{d: d, buf: blockdev.AllocAligned(int(chunk))}
					}
					parity := make([][]byte, g.m)
					for pb.Next() {
						for p := range parity {
							parity[p] = v.getBuf(chunk)
						}
						if err := v.encodeParity(0, bySlot, 0, chunk, parity); err != nil {
							b.Error(err)
							return
						}
						v.putBuf(parity...)
					}
				})
			})
		}
	}
}
