//! Writes a state dict in the format of `torch.save` (zip, protocol-2 pickle, one raw storage per
//! tensor), so the reference's own code loads a model trained in trm: `torch.load(path)` gives an
//! `OrderedDict` of CPU tensors under the names given, each float32 or bfloat16 as asked
//! (`trm export --format torch`), or int32 and int64 (an evaluation's saved outputs,
//! `eval::outputs`).

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
}

/// A tensor's values: float ones (stored float32 or bfloat16) or integers (int32 or int64).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Float(Vec<f32>),
    Int(Vec<i64>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
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
        Entry { name: name.into(), shape, values: Values::Float(values), stored: Stored::Float32 }
    }
    /// An int32 tensor.
    pub fn i32(name: impl Into<String>, shape: Vec<usize>, values: &[i32]) -> Self {
        Entry { name: name.into(), shape, values: Values::Int(values.iter().map(|&v| v as i64).collect()), stored: Stored::Int32 }
    }
    /// An int64 tensor.
    pub fn i64(name: impl Into<String>, shape: Vec<usize>, values: Vec<i64>) -> Self {
        Entry { name: name.into(), shape, values: Values::Int(values), stored: Stored::Int64 }
    }
    fn bytes(&self) -> Result<Vec<u8>> {
        Ok(match (&self.values, self.stored) {
            (Values::Float(v), Stored::Float32) => v.iter().flat_map(|v| v.to_le_bytes()).collect(),
            (Values::Float(v), Stored::Bfloat16) => v.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect(),
            (Values::Int(v), Stored::Int64) => v.iter().flat_map(|v| v.to_le_bytes()).collect(),
            (Values::Int(v), Stored::Int32) => {
                let mut out = Vec::with_capacity(4 * v.len());
                for &x in v {
                    let x = i32::try_from(x).map_err(|_| anyhow::anyhow!("{}: {x} does not fit int32", self.name))?;
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out
            }
            (_, stored) => anyhow::bail!(
                "{}: {} values cannot be stored as {stored:?}",
                self.name,
                match self.values {
                    Values::Float(_) => "float",
                    Values::Int(_) => "integer",
                }
            ),
        })
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
    for (i, Entry { name, shape, stored, values }) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        anyhow::ensure!(values.len() == n, "{name}: {} values for the shape {shape:?}", values.len());
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
            stride[d] = stride[d + 1] * shape[d + 1];
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
        let mut z = zip::ZipWriter::new(w);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
        let mut entry = |name: String, bytes: &[u8]| -> Result<()> {
            z.start_file(name.clone(), opts).with_context(|| format!("zip entry {name}"))?;
            z.write_all(bytes)?;
            Ok(())
        };
        entry(format!("{archive}/data.pkl"), &p.0)?;
        entry(format!("{archive}/byteorder"), b"little")?;
        for (i, t) in tensors.iter().enumerate() {
            entry(format!("{archive}/data/{i}"), &t.bytes()?)?;
        }
        entry(format!("{archive}/version"), b"3\n")?;
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
            assert_eq!((&back[&t.name].shape, Values::Float(back[&t.name].values.clone())), (&t.shape, t.values.clone()), "{}", t.name);
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
        let tensors = vec![Entry::i32("inputs", vec![2, 2], &[1, -100, 7, i32::MAX]), Entry::i64("preds", vec![3], vec![5, -1, i64::MAX])];
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
        // A value int32 cannot hold, or values that do not fill the shape: an error, no file.
        let g = t.path().join("bad");
        let e = super::write(&g, &[Entry { stored: Stored::Int32, ..Entry::i64("x", vec![1], vec![1 << 40]) }]).unwrap_err();
        assert!(format!("{e:#}").contains("does not fit int32"), "{e:#}");
        let e = super::write(&g, &[Entry::i64("x", vec![2, 2], vec![1])]).unwrap_err();
        assert!(format!("{e:#}").contains("1 values for the shape [2, 2]"), "{e:#}");
        assert!(!g.exists());
    }
}
