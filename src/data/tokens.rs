//! A split's token grids (`inputs`, `labels`: one byte per token, examples back to back): built
//! in memory by the data builders, or mapped read-only from the `.npy` file a reader opens, as
//! the reference's loader does (`np.load(..., mmap_mode="r")`). A mapped array costs no private
//! memory: the ranks of one machine share the file's pages in the page cache. ARC-AGI-1 at 1000
//! augmentations holds 6.5 GB of them. Why the mapped bytes never change, and what a foreign
//! writer could do: `util::fs::map_read_only`.

use memmap2::Mmap;
use std::sync::Arc;

/// Token bytes, owned or mapped; reads as a `[u8]`.
#[derive(Clone)]
pub struct Tokens(Repr);

#[derive(Clone)]
enum Repr {
    Owned(Vec<u8>),
    /// `len` bytes of `map` from `start` (the array's data after its `.npy` header).
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

impl Tokens {
    /// `len` bytes of `map` from `start`, or None when the map does not hold them.
    pub fn mapped(map: Arc<Mmap>, start: usize, len: usize) -> Option<Self> {
        (start.checked_add(len)? <= map.len()).then_some(Tokens(Repr::Mapped { map, start, len }))
    }

    /// Whether the bytes are mapped from a file (not copied into memory).
    pub fn is_mapped(&self) -> bool {
        matches!(self.0, Repr::Mapped { .. })
    }

    /// Appends bytes (builders); a mapped array is first copied into memory.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        if let Repr::Mapped { .. } = self.0 {
            self.0 = Repr::Owned(self.to_vec());
        }
        if let Repr::Owned(v) = &mut self.0 {
            v.extend_from_slice(bytes);
        }
    }
}

/// Bytes checked per pass of `position` before a mapped chunk is released.
const CHUNK: usize = 64 << 20;

impl Tokens {
    /// The index of the first byte for which `hit` holds. A mapped array is read in chunks, and
    /// each chunk's pages are released from this process once read (they stay in the page
    /// cache), so checking a whole data set does not count gigabytes into this process's
    /// resident memory.
    pub fn position(&self, hit: impl Fn(u8) -> bool) -> Option<usize> {
        let bytes: &[u8] = self;
        for (c, chunk) in bytes.chunks(CHUNK).enumerate() {
            if let Some(i) = chunk.iter().position(|&b| hit(b)) {
                return Some(c * CHUNK + i);
            }
            #[cfg(unix)]
            if let Repr::Mapped { map, start, .. } = &self.0 {
                // SAFETY: a read-only shared file mapping: dropped pages are read again from
                // the file on the next access, with the same bytes. Nothing holds them now but
                // `chunk`, which is not used after this.
                let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start + c * CHUNK, chunk.len()) };
            }
        }
        None
    }
}

impl std::ops::Deref for Tokens {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Repr::Owned(v) => v,
            Repr::Mapped { map, start, len } => &map[*start..*start + *len],
        }
    }
}

impl From<Vec<u8>> for Tokens {
    fn from(v: Vec<u8>) -> Self {
        Tokens(Repr::Owned(v))
    }
}

impl Default for Tokens {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl PartialEq for Tokens {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

/// The length and where the bytes live, not the bytes (gigabytes for ARC).
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} bytes, {})", self.len(), if self.is_mapped() { "mapped" } else { "in memory" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn map_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<Mmap>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        // SAFETY: the test's own file, not changed while mapped.
        let map = unsafe { Mmap::map(f.as_file()) }.unwrap();
        (f, Arc::new(map))
    }

    #[test]
    fn mapped_bytes_read_like_owned_ones_and_copy_on_append() {
        let (_f, map) = map_of(b"headerABCDEF");
        let mut t = Tokens::mapped(map.clone(), 6, 6).unwrap();
        assert!(t.is_mapped());
        assert_eq!(&t[..], b"ABCDEF");
        assert_eq!(t, Tokens::from(b"ABCDEF".to_vec()));
        let copy = t.clone();
        t.extend_from_slice(b"G");
        assert!(!t.is_mapped() && &t[..] == b"ABCDEFG");
        assert_eq!(&copy[..], b"ABCDEF", "the clone still reads the map");
        assert!(format!("{t:?}").contains("7 bytes"));
    }

    #[test]
    fn position_finds_the_first_hit_across_chunks_mapped_or_not() {
        let mut bytes = vec![1u8; CHUNK + 10];
        bytes[CHUNK + 3] = 9;
        bytes[CHUNK + 7] = 9;
        let (_f, map) = map_of(&bytes);
        let mapped = Tokens::mapped(map, 0, bytes.len()).unwrap();
        for t in [&mapped, &Tokens::from(bytes.clone())] {
            assert_eq!(t.position(|b| b == 9), Some(CHUNK + 3));
            assert_eq!(t.position(|b| b > 9), None);
            // The released pages read back the same.
            assert_eq!(t[CHUNK + 3], 9);
            assert!(t[..CHUNK].iter().all(|&b| b == 1));
        }
    }

    #[test]
    fn a_range_past_the_map_is_refused() {
        let (_f, map) = map_of(b"0123456789");
        assert!(Tokens::mapped(map.clone(), 4, 6).is_some());
        assert!(Tokens::mapped(map.clone(), 4, 7).is_none());
        assert!(Tokens::mapped(map, usize::MAX, 2).is_none());
    }
}
