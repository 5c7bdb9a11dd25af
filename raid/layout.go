package raid

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxShards is the most members a Reed-Solomon stripe can have (the codec
// works in GF(2^8)).
const MaxShards = 256

// Layout says how a stripe is spread over the members: Data chunks of user
// data, each stored in Copies copies, plus Parity Reed-Solomon chunks, one
// chunk per member, so Members = Data*Copies + Parity.
//
//	raid0    Data=n   Copies=1 Parity=0
//	mirror:N Data=1   Copies=N Parity=0   (raid1 = mirror:2)
//	raid10   Data=n/2 Copies=2 Parity=0
//	rs:K+M   Data=K   Copies=1 Parity=M   (raid5 = rs:(n-1)+1, raid6 = rs:(n-2)+2)
type Layout struct {
	Name    string // as the user wrote it: raid0, raid1, mirror:3, raid10, raid5, raid6, rs:4+2
	Members int
	Data    int
	Copies  int
	Parity  int
}

// ParseLayout checks that the named layout can use the given number of
// members and returns it.
func ParseLayout(name string, members int) (Layout, error) {
	l := Layout{Name: name, Members: members, Copies: 1}
	need := func(ok bool, format string, args ...any) error {
		if ok {
			return nil
		}
		return fmt.Errorf("%w: layout %s %s, got %d members", ErrTooFewMembers, name, fmt.Sprintf(format, args...), members)
	}
	var err error
	switch {
	case name == "raid0":
		l.Data = members
		err = need(members >= 2, "needs at least 2 members")
	case name == "raid1" || strings.HasPrefix(name, "mirror:"):
		n := 2
		if name != "raid1" {
			n, err = strconv.Atoi(strings.TrimPrefix(name, "mirror:"))
			if err != nil || n < 2 || n > MaxShards {
				return Layout{}, fmt.Errorf("%w: %q: write mirror:N with N from 2 to %d", ErrBadLayout, name, MaxShards)
			}
		}
		l.Data, l.Copies = 1, n
		err = need(members == n, "needs exactly %d members", n)
	case name == "raid10":
		l.Data, l.Copies = members/2, 2
		err = need(members >= 4 && members%2 == 0, "needs an even number of members, at least 4")
	case name == "raid5" || name == "raid6":
		l.Parity = 1
		if name == "raid6" {
			l.Parity = 2
		}
		l.Data = members - l.Parity
		err = need(l.Data >= 2, "needs at least %d members", l.Parity+2)
		if err == nil && members > MaxShards {
			return Layout{}, fmt.Errorf("%w: %s over %d members exceeds the codec's limit of %d", ErrBadLayout, name, members, MaxShards)
		}
	case strings.HasPrefix(name, "rs:"):
		k, m, ok := strings.Cut(strings.TrimPrefix(name, "rs:"), "+")
		var e1, e2 error
		l.Data, e1 = strconv.Atoi(k)
		l.Parity, e2 = strconv.Atoi(m)
		if !ok || e1 != nil || e2 != nil || l.Data < 1 || l.Parity < 1 {
			return Layout{}, fmt.Errorf("%w: %q: write rs:K+M with K data and M parity chunks, both at least 1", ErrBadLayout, name)
		}
		if l.Data+l.Parity > MaxShards {
			return Layout{}, fmt.Errorf("%w: %s has %d chunks per stripe, beyond the codec's limit of %d", ErrBadLayout, name, l.Data+l.Parity, MaxShards)
		}
		err = need(members == l.Data+l.Parity, "needs exactly %d members", l.Data+l.Parity)
	default:
		return Layout{}, fmt.Errorf("%w: %q: use raid0, raid1, mirror:N, raid10, raid5, raid6 or rs:K+M", ErrBadLayout, name)
	}
	if err != nil {
		return Layout{}, err
	}
	return l, nil
}

// Redundancy is how many members can be lost, whichever they are, without
// losing data.
func (l Layout) Redundancy() int {
	if l.Parity > 0 {
		return l.Parity
	}
	return l.Copies - 1
}

// String describes the layout for people.
func (l Layout) String() string {
	switch {
	case l.Parity > 0:
		return fmt.Sprintf("%s (%d data + %d parity per stripe, %d members)", l.Name, l.Data, l.Parity, l.Members)
	case l.Copies > 1 && l.Data > 1:
		return fmt.Sprintf("%s (%d stripes of %d copies, %d members)", l.Name, l.Data, l.Copies, l.Members)
	case l.Copies > 1:
		return fmt.Sprintf("%s (%d copies)", l.Name, l.Copies)
	}
	return fmt.Sprintf("%s (striped over %d members, no redundancy)", l.Name, l.Members)
}

// Slot returns the member slot that holds shard i of stripe s. Shards are
// numbered data first: for mirrors shard d*Copies+c is copy c of data chunk
// d; for parity layouts shards Data.. are the parity chunks. Parity layouts
// rotate shards across members from stripe to stripe so that parity I/O is
// spread evenly; mirrors do not, so that the copies of a chunk always sit on
// the same members and the loss of one member per copy set is survivable.
func (l Layout) Slot(s int64, i int) int {
	if l.Parity == 0 {
		return i
	}
	return int((int64(i) + s) % int64(l.Members))
}

// Survives reports whether data can still be served with only the members
// marked present.
func (l Layout) Survives(present []bool) bool {
	if l.Parity > 0 {
		missing := 0
		for _, p := range present {
			if !p {
				missing++
			}
		}
		return missing <= l.Parity
	}
	for d := 0; d < l.Data; d++ {
		ok := false
		for c := 0; c < l.Copies; c++ {
			ok = ok || present[d*l.Copies+c]
		}
		if !ok {
			return false
		}
	}
	return true
}

// geometry adds sizes to a layout: where each byte of the volume lives.
type geometry struct {
	Layout
	chunk   int64 // bytes per chunk, a power of two
	size    int64 // bytes in the volume
	stripes int64 // stripes per member: capacity = stripes*chunk
}

func newGeometry(l Layout, chunk, size int64) geometry {
	sd := int64(l.Data) * chunk
	return geometry{Layout: l, chunk: chunk, size: size, stripes: (size + sd - 1) / sd}
}

// stripeData is the user data one stripe holds.
func (g geometry) stripeData() int64 { return int64(g.Data) * g.chunk }

// memberSize is the data capacity each member needs.
func (g geometry) memberSize() int64 { return g.stripes * g.chunk }

// locate returns where volume byte off lives: its stripe, its data chunk in
// the stripe, and its offset in the chunk.
func (g geometry) locate(off int64) (stripe int64, d int, inChunk int64) {
	sd := g.stripeData()
	return off / sd, int(off % sd / g.chunk), off % g.chunk
}

// extent is the piece of a request that falls in one data chunk.
type extent struct {
	stripe int64
	d      int   // data chunk index in the stripe
	off    int64 // offset in the chunk
	pos    int64 // offset in the request
	n      int64
}

// extents cuts the n bytes at volume offset off into per-chunk extents, in
// volume order.
func (g geometry) extents(off, n int64) []extent {
	var out []extent
	for pos := int64(0); pos < n; {
		s, d, in := g.locate(off + pos)
		m := min(g.chunk-in, n-pos)
		out = append(out, extent{stripe: s, d: d, off: in, pos: pos, n: m})
		pos += m
	}
	return out
}
