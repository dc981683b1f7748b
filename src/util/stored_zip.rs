//! A zip archive of stored (uncompressed) entries, each entry's data aligned to 64 bytes, with
//! zip64 records where an entry, an offset or the directory passes 4 GiB: the container of a
//! `torch.save` file (`torch_zip_write`).
//!
//! Written here rather than with the `zip` crate because the pinned version (7.4) writes an entry
//! that needs zip64 with two zip64 fields in its central-directory record, the first with wrong
//! sizes, and torch's reader (miniz) takes the first: a file of 4 GiB or more that it wrote fails
//! `torch.load` with "invalid header or archive is corrupted" (checked 2026-12-07). Reading stays
//! with the crate (`torch_zip`), which reads these files.

use anyhow::{Result, ensure};
use std::io::Write;

/// Data of every entry starts at a multiple of this (as torch's own writer aligns it).
const ALIGN: u64 = 64;
/// The largest value a 32-bit field holds; at it, the field says "see the zip64 record".
const MAX32: u64 = 0xffff_ffff;
/// DOS date of 1980-01-01 (the earliest), time 00:00: the files carry no time.
const DOS_DATE: u16 = (1 << 5) | 1;

/// What the central directory needs of an entry written.
struct Written {
    name: String,
    crc: u32,
    len: u64,
    offset: u64,
}

/// A writer of stored entries, one after the other; `finish` writes the central directory.
pub struct StoredZip<W: Write> {
    w: W,
    at: u64,
    written: Vec<Written>,
}

fn u16le(v: u16) -> [u8; 2] {
    v.to_le_bytes()
}
fn u32le(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}
fn u64le(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// `v` in a 32-bit field: itself, or MAX32 (then it goes into the zip64 field).
fn field32(v: u64) -> u32 {
    v.min(MAX32) as u32
}

impl<W: Write> StoredZip<W> {
    pub fn new(w: W) -> Self {
        StoredZip { w, at: 0, written: vec![] }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes)?;
        self.at += bytes.len() as u64;
        Ok(())
    }

    /// Writes an entry of `len` bytes whose CRC-32 is `crc`; `data` writes exactly those bytes.
    pub fn entry(&mut self, name: &str, len: u64, crc: u32, data: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        ensure!(name.len() <= 0xffff, "zip entry name of {} bytes", name.len());
        let offset = self.at;
        let zip64 = len >= MAX32;
        // Needed to extract: zip64 (4.5) where the sizes or the offset need it, as the central
        // record says.
        let needed = if zip64 || offset >= MAX32 { 45 } else { 20 };
        let mut extra = Vec::new();
        if zip64 {
            extra.extend(u16le(1));
            extra.extend(u16le(16));
            extra.extend(u64le(len));
            extra.extend(u64le(len));
        }
        // Padding in an extra field of its own ("FB", as torch pads), so the data is aligned.
        let header = 30 + name.len() as u64 + extra.len() as u64;
        let pad = (ALIGN - (offset + header + 4) % ALIGN) % ALIGN;
        extra.extend(u16le(0x4246));
        extra.extend(u16le(pad as u16));
        extra.extend(std::iter::repeat_n(0u8, pad as usize));
        let mut h = Vec::with_capacity(30 + name.len() + extra.len());
        h.extend(u32le(0x0403_4b50));
        h.extend(u16le(needed));
        h.extend(u16le(0)); // flags
        h.extend(u16le(0)); // stored
        h.extend(u16le(0)); // time
        h.extend(u16le(DOS_DATE));
        h.extend(u32le(crc));
        h.extend(u32le(field32(len)));
        h.extend(u32le(field32(len)));
        h.extend(u16le(name.len() as u16));
        h.extend(u16le(extra.len() as u16));
        h.extend(name.as_bytes());
        h.extend(extra);
        self.put(&h)?;
        debug_assert_eq!(self.at % ALIGN, 0);
        let mut counted = Counted { w: &mut self.w, n: 0, crc: crc32fast::Hasher::new() };
        data(&mut counted)?;
        ensure!(counted.n == len, "zip entry {name}: {} bytes written for {len}", counted.n);
        // The header's CRC was computed before (`crc_of`, a first pass): the bytes written must
        // be those, or readers that check it refuse the entry.
        let written = counted.crc.finalize();
        ensure!(written == crc, "zip entry {name}: the bytes written have CRC-32 {written:08x}, not the {crc:08x} its header holds");
        self.at += len;
        self.written.push(Written { name: name.to_string(), crc, len, offset });
        Ok(())
    }

    /// Writes the central directory (with the zip64 end records where needed) and returns the
    /// writer.
    pub fn finish(mut self) -> Result<W> {
        let start = self.at;
        let records: Vec<Vec<u8>> = self.written.iter().map(central_record).collect();
        for r in &records {
            self.put(r)?;
        }
        let size = self.at - start;
        let n = self.written.len() as u64;
        let zip64 = start >= MAX32 || size >= MAX32 || n >= 0xffff;
        if zip64 {
            let end64 = self.at;
            let mut r = Vec::with_capacity(56 + 20);
            r.extend(u32le(0x0606_4b50));
            r.extend(u64le(44)); // the record's size after this field
            r.extend(u16le(45));
            r.extend(u16le(45));
            r.extend(u32le(0)); // this disk
            r.extend(u32le(0)); // the directory's disk
            r.extend(u64le(n));
            r.extend(u64le(n));
            r.extend(u64le(size));
            r.extend(u64le(start));
            r.extend(u32le(0x0706_4b50)); // locator
            r.extend(u32le(0));
            r.extend(u64le(end64));
            r.extend(u32le(1)); // disks
            self.put(&r)?;
        }
        let mut e = Vec::with_capacity(22);
        e.extend(u32le(0x0605_4b50));
        e.extend(u16le(0));
        e.extend(u16le(0));
        e.extend(u16le(n.min(0xffff) as u16));
        e.extend(u16le(n.min(0xffff) as u16));
        e.extend(u32le(field32(size)));
        e.extend(u32le(field32(start)));
        e.extend(u16le(0)); // comment
        self.put(&e)?;
        Ok(self.w)
    }
}

/// An entry's central-directory record; sizes and offset past 32 bits go into its zip64 field.
fn central_record(f: &Written) -> Vec<u8> {
    let mut zip64 = Vec::new();
    for v in [f.len, f.len, f.offset] {
        if v >= MAX32 {
            zip64.extend(u64le(v));
        }
    }
    let mut extra = Vec::new();
    if !zip64.is_empty() {
        extra.extend(u16le(1));
        extra.extend(u16le(zip64.len() as u16));
        extra.extend(zip64);
    }
    let needed = if extra.is_empty() { 20 } else { 45 };
    let mut r = Vec::with_capacity(46 + f.name.len() + extra.len());
    r.extend(u32le(0x0201_4b50));
    r.extend(u16le((3 << 8) | 45)); // made by: unix, zip 4.5
    r.extend(u16le(needed));
    r.extend(u16le(0)); // flags
    r.extend(u16le(0)); // stored
    r.extend(u16le(0)); // time
    r.extend(u16le(DOS_DATE));
    r.extend(u32le(f.crc));
    r.extend(u32le(field32(f.len)));
    r.extend(u32le(field32(f.len)));
    r.extend(u16le(f.name.len() as u16));
    r.extend(u16le(extra.len() as u16));
    r.extend(u16le(0)); // comment
    r.extend(u16le(0)); // disk
    r.extend(u16le(0)); // internal attributes
    r.extend(u32le(0o100644 << 16)); // external attributes: a regular file, rw-r--r--
    r.extend(u32le(field32(f.offset)));
    r.extend(f.name.as_bytes());
    r.extend(extra);
    r
}

/// A writer that counts what passes through it.
struct Counted<'a, W: Write> {
    w: &'a mut W,
    n: u64,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        self.crc.update(&buf[..k]);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// The CRC-32 of what `data` writes.
pub fn crc_of(data: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<u32> {
    struct Crc(crc32fast::Hasher);
    impl Write for Crc {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Crc(crc32fast::Hasher::new());
    data(&mut c)?;
    Ok(c.0.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The zip crate reads what is written: names, contents, CRCs (it checks them on reading), and
    /// every entry's data at a multiple of 64 bytes.
    #[test]
    fn entries_read_back_aligned() {
        let mut z = StoredZip::new(Vec::new());
        let entries: Vec<(String, Vec<u8>)> = (0..5).map(|i| (format!("a/data/{i}"), (0..i * 37).map(|b| b as u8).collect())).collect();
        for (name, bytes) in &entries {
            let crc = crc_of(|w| Ok(w.write_all(bytes)?)).unwrap();
            z.entry(name, bytes.len() as u64, crc, |w| Ok(w.write_all(bytes)?)).unwrap();
        }
        let out = z.finish().unwrap();
        let mut r = zip::ZipArchive::new(std::io::Cursor::new(out)).unwrap();
        for (name, bytes) in &entries {
            let mut f = r.by_name(name).unwrap();
            assert_eq!(f.data_start().unwrap() % ALIGN, 0, "{name}");
            let mut back = vec![];
            f.read_to_end(&mut back).unwrap();
            assert_eq!(&back, bytes, "{name}");
        }
        // A data writer that writes less than it said: an error.
        let mut z = StoredZip::new(Vec::new());
        let e = z.entry("x", 4, 0, |w| Ok(w.write_all(b"abc")?)).unwrap_err();
        assert!(e.to_string().contains("3 bytes written for 4"), "{e}");
    }

    #[test]
    fn bytes_that_differ_from_their_crc_are_refused() {
        let mut z = StoredZip::new(Vec::new());
        let crc = crc_of(|w| Ok(w.write_all(b"abc")?)).unwrap();
        let e = z.entry("a/data/0", 3, crc, |w| Ok(w.write_all(b"abd")?)).unwrap_err().to_string();
        assert!(e.contains("CRC-32") && e.contains("a/data/0"), "{e}");
    }

    /// The zip64 fields at the 4 GiB edge, byte by byte (a file that large is only written by
    /// hand, `torch_zip_write`'s ignored test): the central record holds exactly the fields that
    /// are at 0xFFFFFFFF, in the order uncompressed, compressed, offset; a directory past the
    /// edge gets the zip64 end record and its locator.
    #[test]
    fn zip64_fields_appear_exactly_where_values_reach_four_gib() {
        let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        let record = |len: u64, offset: u64| central_record(&Written { name: "a".into(), crc: 7, len, offset });
        let r = record(MAX32 - 1, MAX32 - 1);
        assert_eq!((u16_at(&r, 30), u32_at(&r, 20), u32_at(&r, 42), u16_at(&r, 6)), (0, 0xffff_fffe, 0xffff_fffe, 20));
        let r = record(MAX32, 1 << 32);
        assert_eq!((u32_at(&r, 20), u32_at(&r, 24), u32_at(&r, 42), u16_at(&r, 6)), (MAX32 as u32, MAX32 as u32, MAX32 as u32, 45));
        assert_eq!((u16_at(&r, 30), u16_at(&r, 47), u16_at(&r, 49)), (28, 1, 24));
        assert_eq!((u64_at(&r, 51), u64_at(&r, 59), u64_at(&r, 67)), (MAX32, MAX32, 1 << 32));
        let r = record(5, MAX32);
        assert_eq!((u16_at(&r, 30), u16_at(&r, 49), u64_at(&r, 51), u32_at(&r, 20)), (12, 8, MAX32, 5));
        // The end records of a directory that starts past the edge (here an empty one).
        let mut z = StoredZip::new(Vec::new());
        z.at = 1 << 32;
        let out = z.finish().unwrap();
        assert_eq!((u32_at(&out, 0), u64_at(&out, 4), u64_at(&out, 48)), (0x0606_4b50, 44, 1 << 32));
        assert_eq!((u32_at(&out, 56), u64_at(&out, 64), u32_at(&out, 72)), (0x0706_4b50, 1 << 32, 1));
        assert_eq!((u32_at(&out, 76), u32_at(&out, 92), out.len()), (0x0605_4b50, MAX32 as u32, 98));
        // Below it, the plain end record alone.
        let out = StoredZip::new(Vec::new()).finish().unwrap();
        assert_eq!((u32_at(&out, 0), out.len()), (0x0605_4b50, 22));
    }
}
