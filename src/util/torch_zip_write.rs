//! Writes a state dict in the format of `torch.save` (zip, protocol-2 pickle, one raw storage per
//! tensor), so the reference's own code loads a model trained in trm: `torch.load(path)` gives an
//! `OrderedDict` of CPU tensors under the names given, each float32 or bfloat16 as asked
//! (`trm export --format torch`), or int32 and int64 (an evaluation's saved outputs,
//! `store::eval_outputs`).

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// A protocol-2 pickle, written opcode by opcode.
struct Pickle(Vec<u8>);

impl Pickle {
    fn op(&mut self, b: u8) {
        self.0.push(b);
    }
    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.0.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn str(&mut self, s: &str) {
        self.op(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, v: usize) {
        match u32::try_from(v) {
            Ok(v) if v <= i32::MAX as u32 => {
                self.op(b'J');
                self.0.extend_from_slice(&(v as i32).to_le_bytes());
            }
            _ => {
                self.op(0x8a); // LONG1, 8 bytes little-endian
                self.op(8);
                self.0.extend_from_slice(&(v as i64).to_le_bytes());
            }
        }
    }
    fn tuple_of(&mut self, xs: &[usize]) {
        self.op(b'(');
        for &x in xs {
            self.int(x);
        }
        self.op(b't');
    }
    /// `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R');
    }
}

/// How a tensor is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Float32,
    /// Rounded to the nearest bfloat16 (ties to even), as `tensor.to(torch.bfloat16)` does.
    Bfloat16,
    Int32,
    Int64,
}

impl Stored {
    /// torch's storage class for it.
    fn storage(self) -> &'static str {
        match self {
            Stored::Float32 => "FloatStorage",
            Stored::Bfloat16 => "BFloat16Storage",
            Stored::Int32 => "IntStorage",
            Stored::Int64 => "LongStorage",
        }
    }
    fn bytes_per_value(self) -> usize {
        match self {
            Stored::Bfloat16 => 2,
            Stored::Float32 | Stored::Int32 => 4,
            Stored::Int64 => 8,
        }
    }
}

/// A tensor's values: floats (stored float32 or bfloat16), or int32 or int64 integers.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I32(Vec<i32>),
    I64(Vec<i64>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I64(v) => v.len(),
        }
    }
}

/// One tensor of a state dict: its name, shape, values and how they are stored.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Values,
    pub stored: Stored,
}

impl Entry {
    /// A float32 tensor.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> Self {
        Entry { name: name.into(), shape, values: Values::F32(values), stored: Stored::Float32 }
    }
    /// An int32 tensor.
    pub fn i32(name: impl Into<String>, shape: Vec<usize>, values: Vec<i32>) -> Self {
        Entry { name: name.into(), shape, values: Values::I32(values), stored: Stored::Int32 }
    }
    /// An int64 tensor.
    pub fn i64(name: impl Into<String>, shape: Vec<usize>, values: Vec<i64>) -> Self {
        Entry { name: name.into(), shape, values: Values::I64(values), stored: Stored::Int64 }
    }

    /// The values and the storage agree, and fill the shape.
    fn check(&self) -> Result<()> {
        let n = self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let Some(n) = n else { anyhow::bail!("{}: the shape {:?} holds more values than memory can address", self.name, self.shape) };
        anyhow::ensure!(self.values.len() == n, "{}: {} values for the shape {:?}", self.name, self.values.len(), self.shape);
        let fits = matches!(
            (&self.values, self.stored),
            (Values::F32(_), Stored::Float32 | Stored::Bfloat16) | (Values::I32(_), Stored::Int32) | (Values::I64(_), Stored::Int64)
        );
        anyhow::ensure!(fits, "{}: these values cannot be stored as {:?}", self.name, self.stored);
        Ok(())
    }

    /// The raw little-endian storage, written a slice at a time (a tensor of gigabytes is never
    /// copied whole).
    fn write_data(&self, w: &mut dyn Write) -> Result<()> {
        const SLICE: usize = 1 << 14;
        let mut buf = Vec::with_capacity(SLICE * 8);
        let mut put = |bytes: &mut dyn Iterator<Item = u8>, w: &mut dyn Write| -> Result<()> {
            buf.clear();
            buf.extend(bytes);
            w.write_all(&buf)?;
            Ok(())
        };
        match (&self.values, self.stored) {
            (Values::F32(v), Stored::Bfloat16) => {
                v.chunks(SLICE).try_for_each(|c| put(&mut c.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()), w))
            }
            (Values::F32(v), _) => v.chunks(SLICE).try_for_each(|c| put(&mut c.iter().flat_map(|x| x.to_le_bytes()), w)),
            (Values::I32(v), _) => v.chunks(SLICE).try_for_each(|c| put(&mut c.iter().flat_map(|x| x.to_le_bytes()), w)),
            (Values::I64(v), _) => v.chunks(SLICE).try_for_each(|c| put(&mut c.iter().flat_map(|x| x.to_le_bytes()), w)),
        }
    }
}

/// Writes `tensors` (in this order) as a torch.save file at `path`, atomically. `archive` is the
/// name of the folder inside the zip (torch uses the file's stem).
pub fn write(path: &Path, tensors: &[Entry]) -> Result<()> {
    stage(path, tensors)?.commit()
}

/// As `write`, but the file is left beside `path` until `Staged::commit` puts it there.
pub fn stage(path: &Path, tensors: &[Entry]) -> Result<crate::util::fs::Staged> {
    let archive = path.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty() && s.is_ascii()).unwrap_or("archive").to_string();
    let mut p = Pickle(vec![0x80, 2]);
    p.ordered_dict();
    p.op(b'(');
    for (i, t @ Entry { name, shape, stored, .. }) in tensors.iter().enumerate() {
        t.check()?;
        let n: usize = shape.iter().product();
        p.str(name);
        // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        p.op(b'(');
        p.str("storage");
        p.global("torch", stored.storage());
        p.str(&i.to_string());
        p.str("cpu");
        p.int(n);
        p.op(b't');
        p.op(b'Q');
        p.int(0);
        p.tuple_of(shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            // As torch: a dimension of size 0 counts as 1 in the strides before it.
            stride[d] = stride[d + 1] * shape[d + 1].max(1);
        }
        p.tuple_of(&stride);
        p.op(0x89); // requires_grad False
        p.ordered_dict();
        p.op(b't');
        p.op(b'R');
    }
    p.op(b'u');
    p.op(b'.');
    crate::util::fs::stage_with(path, |w| {
        let mut z = super::stored_zip::StoredZip::new(w);
        let small = |z: &mut super::stored_zip::StoredZip<_>, name: String, bytes: &[u8]| -> Result<()> {
            let crc = super::stored_zip::crc_of(|w| Ok(w.write_all(bytes)?))?;
            z.entry(&name, bytes.len() as u64, crc, |w| Ok(w.write_all(bytes)?))
        };
        small(&mut z, format!("{archive}/data.pkl"), &p.0)?;
        small(&mut z, format!("{archive}/byteorder"), b"little")?;
        for (i, t) in tensors.iter().enumerate() {
            // The CRC first (a pass over the values), then the data: nothing is held whole.
            let crc = super::stored_zip::crc_of(|w| t.write_data(w))?;
            let len = (t.values.len() * t.stored.bytes_per_value()) as u64;
            z.entry(&format!("{archive}/data/{i}"), len, crc, |w| t.write_data(w)).with_context(|| format!("tensor {}", t.name))?;
        }
        small(&mut z, format!("{archive}/version"), b"3\n")?;
        z.finish()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::{Entry, Stored, Values};

    #[test]
    fn what_is_written_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("step_5");
        let tensors = vec![
            Entry::f32("model.inner.a", vec![2, 3], vec![1.0f32, -2.0, 3.5, 0.0, f32::MIN_POSITIVE, 6.0]),
            Entry::f32("model.inner.b", vec![4], vec![0.25f32; 4]),
            // bfloat16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 (to even: 1); 1 + 3·2^-8 rounds up.
            Entry {
                stored: Stored::Bfloat16,
                ..Entry::f32("model.inner.H_init", vec![3], vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.5])
            },
        ];
        super::write(&f, &tensors).unwrap();
        let back = crate::util::torch_zip::read(&f, "").unwrap();
        for t in &tensors[..2] {
            assert_eq!((&back[&t.name].shape, Values::F32(back[&t.name].values.clone())), (&t.shape, t.values.clone()), "{}", t.name);
        }
        let h = &back["model.inner.H_init"];
        assert_eq!((&h.shape, &h.values), (&vec![3], &vec![1.0, 1.0 + 4.0 / 256.0, -0.5]));
        let raw = std::fs::read(&f).unwrap();
        assert!(raw.windows(15).any(|w| w == b"BFloat16Storage"), "the buffer is stored as bfloat16");
    }

    /// Integer tensors: torch's int32 and int64 storages, their values little-endian in the
    /// archive's data entries (trm's reader takes floats only, so the bytes are read here).
    #[test]
    fn integer_tensors_are_written_as_torch_stores_them() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("step_3_all_preds.0");
        let tensors =
            vec![Entry::i32("inputs", vec![2, 2], vec![1, -100, 7, i32::MAX]), Entry::i64("preds", vec![3], vec![5, -1, i64::MAX])];
        super::write(&f, &tensors).unwrap();
        let mut z = zip::ZipArchive::new(std::fs::File::open(&f).unwrap()).unwrap();
        let mut entry = |name: &str| {
            let mut b = vec![];
            std::io::Read::read_to_end(&mut z.by_name(name).unwrap(), &mut b).unwrap();
            b
        };
        let pickle = entry("step_3_all_preds/data.pkl");
        let has = |s: &[u8]| pickle.windows(s.len()).any(|w| w == s);
        assert!(has(b"IntStorage") && has(b"LongStorage") && !has(b"FloatStorage"));
        let ints: Vec<i32> = entry("step_3_all_preds/data/0").chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(ints, [1, -100, 7, i32::MAX]);
        let longs: Vec<i64> = entry("step_3_all_preds/data/1").chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(longs, [5, -1, i64::MAX]);
        // Values of another type than the storage, or that do not fill the shape: an error, and no
        // file, not even the temporary one beside it.
        let g = t.path().join("bad");
        let e = super::write(&g, &[Entry { stored: Stored::Int32, ..Entry::i64("x", vec![1], vec![1 << 40]) }]).unwrap_err();
        assert!(format!("{e:#}").contains("cannot be stored as Int32"), "{e:#}");
        let e = super::write(&g, &[Entry::i64("x", vec![2, 2], vec![1])]).unwrap_err();
        assert!(format!("{e:#}").contains("1 values for the shape [2, 2]"), "{e:#}");
        assert!(!g.exists());
        assert!(std::fs::read_dir(t.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }

    /// A tensor of 4 GiB or more goes into a zip64 entry, which `torch.load` reads (checked by
    /// hand with TRM_KEEP_BIG_FILE). Needs 4.3 GB of memory and of disk, so it is run by hand:
    /// `cargo test --release --lib -- --ignored a_tensor_of_four_gib`; TRM_KEEP_BIG_FILE=PATH
    /// writes the file there instead (to `torch.load` it).
    #[test]
    #[ignore]
    fn a_tensor_of_four_gib_or_more_is_written_and_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let f = std::env::var_os("TRM_KEEP_BIG_FILE").map_or_else(|| t.path().join("big"), std::path::PathBuf::from);
        let n = (1usize << 30) + 16; // float32 values: 4 GiB and 64 bytes
        let values: Vec<f32> = (0..n).map(|i| (i % 1009) as f32).collect();
        super::write(&f, &[Entry::f32("logits", vec![n], values)]).unwrap();
        let mut z = zip::ZipArchive::new(std::fs::File::open(&f).unwrap()).unwrap();
        let archive = f.file_stem().unwrap().to_str().unwrap().to_string();
        let mut e = z.by_name(&format!("{archive}/data/0")).unwrap();
        assert_eq!(e.size(), 4 * n as u64);
        // The last values, after the 4 GiB mark.
        use std::io::Read;
        std::io::copy(&mut e.by_ref().take(4 * (n as u64 - 4)), &mut std::io::sink()).unwrap();
        let mut tail = [0u8; 16];
        e.read_exact(&mut tail).unwrap();
        let last: Vec<f32> = tail.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        let want: Vec<f32> = (n - 4..n).map(|i| (i % 1009) as f32).collect();
        assert_eq!(last, want);
    }
}
