//! `.npy` arrays in the layout the reference builders write: C order, `|u1` for token grids,
//! `<i4` for identifiers and CSR offsets. Thin wrappers over `npyz` that name the file in errors.

use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use super::tokens::Tokens;

/// An n-d array read from disk: flat row-major data plus its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    pub shape: Vec<usize>,
    pub data: Vec<T>,
}

fn read_any<T: npyz::Deserialize>(path: &Path) -> Result<Array<T>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    if npy.order() != npyz::Order::C {
        bail!("{}: Fortran-ordered arrays are not supported", path.display());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let dtype = npy.dtype().descr();
    let data = npy.into_vec::<T>().with_context(|| format!("{}: unexpected dtype {dtype} or truncated data", path.display()))?;
    // npyz's element count wraps on a crafted shape (Cargo.toml keeps that so in debug builds).
    if count != Some(data.len()) {
        bail!("{}: the header's shape {shape:?} does not match the {} elements the file holds", path.display(), data.len());
    }
    Ok(Array { shape, data })
}

/// Reads a `uint8` array (token grids). Also accepts int32/int64 files whose values fit in a byte,
/// since some hand-made data sets store tokens wider than the reference does.
pub fn read_u8(path: &Path) -> Result<Array<u8>> {
    match read_any::<u8>(path) {
        Ok(a) => Ok(a),
        // A byte array that cannot be read is reported as such, not as a failed wider read.
        Err(e) if descr(path).is_ok_and(|d| d.trim_matches('\'') == "|u1") => Err(e),
        Err(_) => {
            let wide = read_i64_lossless(path)?;
            let mut data = Vec::with_capacity(wide.data.len());
            for (i, &v) in wide.data.iter().enumerate() {
                if !(0..=255).contains(&v) {
                    bail!("{}: element {i} = {v} does not fit a uint8 token", path.display());
                }
                data.push(v as u8);
            }
            Ok(Array { shape: wide.shape, data })
        }
    }
}

/// Reads a token array (`uint8`, C order) by mapping the file: its bytes stay in the page cache
/// (`data::tokens`). Any other layout is read as `read_u8` reads it, into memory.
pub fn read_tokens(path: &Path) -> Result<(Vec<usize>, Tokens)> {
    if let Some(mapped) = map_u8(path) {
        return Ok(mapped);
    }
    read_u8(path).map(|a| (a.shape, a.data.into()))
}

/// A `|u1`, C-order file mapped, or None for anything else (a wider dtype, a file that cannot be
/// mapped or whose header does not read): `read_u8` then reads it and names what is wrong.
fn map_u8(path: &Path) -> Option<(Vec<usize>, Tokens)> {
    let map = std::sync::Arc::new(crate::util::fs::map_read_only(&File::open(path).ok()?)?);
    let npy = npyz::NpyFile::new(&map[..]).ok()?;
    if npy.order() != npyz::Order::C || npy.dtype().descr().trim_matches('\'') != "|u1" {
        return None;
    }
    let shape: Vec<usize> = npy.shape().iter().map(|&d| d as usize).collect();
    let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    // The data follows the header: magic (6 bytes), version (2), the header's length (2 bytes in
    // format 1, 4 in formats 2 and 3), the header.
    let start = match map.get(6)? {
        1 => 10 + u16::from_le_bytes(map.get(8..10)?.try_into().ok()?) as usize,
        2 | 3 => 12 + u32::from_le_bytes(map.get(8..12)?.try_into().ok()?) as usize,
        _ => return None,
    };
    Some((shape, Tokens::mapped(map, start, count)?))
}

/// The element type a .npy header declares (numpy's type string).
fn descr(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let npy = npyz::NpyFile::new(BufReader::new(file)).with_context(|| format!("{}: not a valid .npy file", path.display()))?;
    Ok(npy.dtype().descr())
}

fn read_i64_lossless(path: &Path) -> Result<Array<i64>> {
    if let Ok(a) = read_any::<i64>(path) {
        return Ok(a);
    }
    let a = read_any::<i32>(path)?;
    Ok(Array { shape: a.shape, data: a.data.into_iter().map(i64::from).collect() })
}

/// Reads an `int32` array (identifiers, CSR offsets); int64 files are accepted if in range.
pub fn read_i32(path: &Path) -> Result<Array<i32>> {
    let a = read_i64_lossless(path)?;
    let mut data = Vec::with_capacity(a.data.len());
    for (i, &v) in a.data.iter().enumerate() {
        let v32 = i32::try_from(v).with_context(|| format!("{}: element {i} = {v} overflows int32", path.display()))?;
        data.push(v32);
    }
    Ok(Array { shape: a.shape, data })
}

/// An element type trm writes: its numpy type string and little-endian bytes.
pub trait NpyElement: Copy {
    const DESCR: &'static str;
    fn put(self, out: &mut Vec<u8>);
}

impl NpyElement for u8 {
    const DESCR: &'static str = "|u1";
    fn put(self, out: &mut Vec<u8>) {
        out.push(self);
    }
}

impl NpyElement for i32 {
    const DESCR: &'static str = "<i4";
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// The header `np.save` writes (format 1.0, C order), byte for byte: the dict, the spaces numpy
/// leaves so the first axis can grow in place (up to 21 digits), then padding to 64 bytes and a
/// newline. Files trm writes are then identical to the reference builders' own.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_repr = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_repr}, }}");
    if let Some(first) = dims.first() {
        dict.push_str(&" ".repeat(21usize.saturating_sub(first.len())));
    }
    let hlen = dict.len() + 1;
    let pad = 64 - (10 + hlen) % 64;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&u16::try_from(hlen + pad).expect("npy header under 64 KiB").to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    out
}

/// Writes `data` with the given shape to `path` atomically (temp file + rename).
pub fn write<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        bail!("{}: shape {shape:?} does not match {} elements", path.display(), data.len());
    }
    let mut bytes = header(T::DESCR, shape);
    bytes.reserve(n * std::mem::size_of::<T>());
    for &v in data {
        v.put(&mut bytes);
    }
    crate::util::fs::write_atomic(path, &bytes)
}

/// Streams a `[rows, cols]` uint8 array to disk without holding it in memory (the ARC builder
/// writes GBs of tokens). Bytes go to `<path>.tmp`; `finish` checks the count and renames.
pub struct U8Stream {
    path: std::path::PathBuf,
    tmp: std::path::PathBuf,
    w: BufWriter<File>,
    expected: u64,
    written: u64,
}

impl U8Stream {
    pub fn create(path: &Path, rows: usize, cols: usize) -> Result<U8Stream> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create folder {}", parent.display()))?;
        }
        let tmp = path.with_extension("npy.tmp");
        let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 22, file);
        w.write_all(&header(u8::DESCR, &[rows, cols])).with_context(|| format!("cannot write the header of {}", tmp.display()))?;
        Ok(U8Stream { path: path.to_path_buf(), tmp, w, expected: (rows * cols) as u64, written: 0 })
    }
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.w.write_all(bytes).with_context(|| format!("cannot write {}", self.tmp.display()))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
    pub fn finish(self) -> Result<()> {
        if self.written != self.expected {
            bail!("{}: wrote {} bytes of data, expected {}", self.path.display(), self.written, self.expected);
        }
        let file = self.w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("cannot rename {}", self.tmp.display()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers printed by numpy 2.4.6 (`np.save` of zero arrays of these shapes).
    #[test]
    fn headers_are_numpys() {
        let numpy = |dict: &str, spaces: usize| {
            let mut v = b"\x93NUMPY\x01\x00v\x00".to_vec();
            v.extend_from_slice(dict.as_bytes());
            v.resize(v.len() + spaces, b' ');
            v.push(b'\n');
            v
        };
        assert_eq!(header("|u1", &[35892, 900]), numpy("{'descr': '|u1', 'fortran_order': False, 'shape': (35892, 900), }", 52));
        assert_eq!(header("<i4", &[8641]), numpy("{'descr': '<i4', 'fortran_order': False, 'shape': (8641,), }", 57));
        assert_eq!(header("<i4", &[0]), numpy("{'descr': '<i4', 'fortran_order': False, 'shape': (0,), }", 60));
        assert_eq!(header("|u1", &[3, 81]), numpy("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 81), }", 57));
    }

    /// A header whose shape overflows the element count, or claims far more elements than the
    /// file holds, is an error (npyz's product wraps, in debug builds too: Cargo.toml), and
    /// nothing is allocated from the claim.
    #[test]
    fn a_lying_shape_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        for shape in [[1usize << 32, 1 << 32], [1 << 59, 81], [u64::MAX as usize, 3]] {
            let p = dir.path().join("lying.npy");
            let mut bytes = header("|u1", &shape);
            bytes.extend_from_slice(&[1, 2, 3]);
            std::fs::write(&p, bytes).unwrap();
            let e = format!("{:#}", read_u8(&p).unwrap_err());
            assert!(e.starts_with(&p.display().to_string()) && !e.contains("i32"), "{e}");
        }
    }

    #[test]
    fn roundtrip_u8_and_i32() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write(&p, &[2, 3], &[1u8, 2, 3, 4, 5, 6]).unwrap();
        let a = read_u8(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, vec![1, 2, 3, 4, 5, 6]);
        let q = dir.path().join("b.npy");
        write(&q, &[3], &[0i32, -7, 1 << 30]).unwrap();
        assert_eq!(read_i32(&q).unwrap().data, vec![0, -7, 1 << 30]);
        // A streamed file reads back the same as a buffered one.
        let r = dir.path().join("c.npy");
        let mut st = U8Stream::create(&r, 2, 3).unwrap();
        st.write(&[1, 2, 3]).unwrap();
        st.write(&[4, 5, 6]).unwrap();
        st.finish().unwrap();
        assert_eq!(std::fs::read(&r).unwrap(), std::fs::read(&p).unwrap());
    }

    #[test]
    fn garbage_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        std::fs::write(&p, b"not numpy").unwrap();
        let err = format!("{:#}", read_u8(&p).unwrap_err());
        assert!(err.contains("bad.npy"), "{err}");
    }

    #[test]
    fn token_arrays_are_mapped_and_other_layouts_read_into_memory() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..24).collect();
        // Format 1 (what numpy and trm write) and format 2 (a 4-byte header length).
        let p = dir.path().join("u1.npy");
        write(&p, &[4, 6], &bytes).unwrap();
        let v1 = std::fs::read(&p).unwrap();
        let hlen = u16::from_le_bytes([v1[8], v1[9]]) as usize;
        // The same header two padding spaces shorter, after a 4-byte length: still 64-aligned.
        let text = [&v1[10..10 + hlen - 3], &v1[10 + hlen - 1..10 + hlen]].concat();
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&(text.len() as u32).to_le_bytes());
        v2.extend_from_slice(&text);
        v2.extend_from_slice(&v1[10 + hlen..]);
        let p2 = dir.path().join("u1-v2.npy");
        std::fs::write(&p2, &v2).unwrap();
        for path in [&p, &p2] {
            let (shape, t) = read_tokens(path).unwrap();
            assert!(t.is_mapped(), "{}", path.display());
            assert_eq!((shape, &t[..]), (vec![4, 6], &bytes[..]), "{}", path.display());
        }
        // int32 tokens (some hand-made sets): read and narrowed, in memory.
        let wide = dir.path().join("i4.npy");
        write(&wide, &[4, 6], &bytes.iter().map(|&b| b as i32).collect::<Vec<_>>()).unwrap();
        let (shape, t) = read_tokens(&wide).unwrap();
        assert!(!t.is_mapped() && shape == [4, 6] && t[..] == bytes[..]);
        // A file shorter than its header says is not mapped: the reader's error names it.
        let short = dir.path().join("short.npy");
        let mut cut = std::fs::read(&p).unwrap();
        cut.truncate(cut.len() - 1);
        std::fs::write(&short, cut).unwrap();
        let e = format!("{:#}", read_tokens(&short).unwrap_err());
        assert!(e.contains("short.npy"), "{e}");
    }
}
