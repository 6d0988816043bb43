package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math/bits"
	"os"
	"path/filepath"

	"github.com/google/uuid"
)

// bitset is a fixed-size set of chunk indexes.
type bitset []uint64

func newBitset(n int64) bitset    { return make(bitset, (n+63)/64) }
func (b bitset) has(i int64) bool { return b[i/64]&(1<<(i%64)) != 0 }
func (b bitset) set(i int64)      { b[i/64] |= 1 << (i % 64) }
func (b bitset) clear(i int64)    { b[i/64] &^= 1 << (i % 64) }
func (b bitset) clone() bitset    { return append(bitset(nil), b...) }
func (b bitset) count() (n int64) {
	for _, w := range b {
		n += int64(bits.OnesCount64(w))
	}
	return n
}

// Sidecar format (little endian), written whole by writeFileAtomic:
//
//	magic "EVOFSC01" | file id [16] | u32 len + version | u64 size |
//	u64 chunk size | present bitmap [ceil(n/64)]u64 | crc [n]u32 |
//	u32 CRC-32C of everything before
//
// where n = ceil(size / chunk size). Any mismatch rejects the sidecar.
const metaMagic = "EVOFSC01"

type meta struct {
	key       Key
	size      int64
	chunkSize int64
	present   bitset
	crc       []uint32
}

func encodeMeta(m meta) []byte {
	b := make([]byte, 0, 64+len(m.key.Version)+8*len(m.present)+4*len(m.crc))
	b = append(b, metaMagic...)
	b = append(b, m.key.FileID[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.key.Version)))
	b = append(b, m.key.Version...)
	b = binary.LittleEndian.AppendUint64(b, uint64(m.size))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.chunkSize))
	for _, w := range m.present {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	for _, c := range m.crc {
		b = binary.LittleEndian.AppendUint32(b, c)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

var errBadMeta = errors.New("cache: corrupt sidecar")

func decodeMeta(b []byte) (meta, error) {
	var m meta
	if len(b) < len(metaMagic)+16+4+8+8+4 || string(b[:len(metaMagic)]) != metaMagic {
		return m, errBadMeta
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return m, errBadMeta
	}
	r := body[len(metaMagic):]
	id, err := uuid.FromBytes(r[:16])
	if err != nil {
		return m, errBadMeta
	}
	r = r[16:]
	vl := int64(binary.LittleEndian.Uint32(r))
	r = r[4:]
	if int64(len(r)) < vl+16 {
		return m, errBadMeta
	}
	m.key = Key{FileID: id, Version: string(r[:vl])}
	r = r[vl:]
	m.size = int64(binary.LittleEndian.Uint64(r))
	m.chunkSize = int64(binary.LittleEndian.Uint64(r[8:]))
	r = r[16:]
	if m.size < 0 || m.chunkSize <= 0 {
		return m, errBadMeta
	}
	n := (m.size + m.chunkSize - 1) / m.chunkSize
	words := (n + 63) / 64
	if int64(len(r)) != 8*words+4*n {
		return m, errBadMeta
	}
	m.present = newBitset(n)
	for i := range m.present {
		m.present[i] = binary.LittleEndian.Uint64(r[8*i:])
	}
	if n%64 != 0 && words > 0 && m.present[words-1]>>(n%64) != 0 {
		return m, errBadMeta // bits past the last chunk
	}
	r = r[8*words:]
	m.crc = make([]uint32, n)
	for i := range m.crc {
		m.crc[i] = binary.LittleEndian.Uint32(r[4*i:])
	}
	return m, nil
}

// writeFileAtomic replaces path with b: temp file, fsync, rename, fsync dir
// (without the fsyncs unless durable).
func writeFileAtomic(path string, b []byte, durable bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if !durable {
		return nil
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
