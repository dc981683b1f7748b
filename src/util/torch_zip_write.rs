//! Writes a state dict in the format of `torch.save` (zip, protocol-2 pickle, one raw storage per
//! tensor), so the reference's own code loads a model trained in trm: `torch.load(path)` gives an
//! `OrderedDict` of float32 CPU tensors under the names given (`trm export --format torch`).

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

/// Writes `tensors` (name, shape, float32 values, in this order) as a torch.save file at `path`,
/// atomically. `archive` is the name of the folder inside the zip (torch uses the file's stem).
pub fn write(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
    let archive = path.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty() && s.is_ascii()).unwrap_or("archive").to_string();
    let mut p = Pickle(vec![0x80, 2]);
    p.ordered_dict();
    p.op(b'(');
    for (i, (name, shape, _)) in tensors.iter().enumerate() {
        p.str(name);
        // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.op(b'(');
        p.op(b'(');
        p.str("storage");
        p.global("torch", "FloatStorage");
        p.str(&i.to_string());
        p.str("cpu");
        p.int(shape.iter().product());
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
    crate::util::fs::write_atomic_with(path, |w| {
        let mut z = zip::ZipWriter::new(w);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).with_alignment(64);
        let mut entry = |name: String, bytes: &[u8]| -> Result<()> {
            z.start_file(name.clone(), opts).with_context(|| format!("zip entry {name}"))?;
            z.write_all(bytes)?;
            Ok(())
        };
        entry(format!("{archive}/data.pkl"), &p.0)?;
        entry(format!("{archive}/byteorder"), b"little")?;
        for (i, (_, _, values)) in tensors.iter().enumerate() {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            entry(format!("{archive}/data/{i}"), &bytes)?;
        }
        entry(format!("{archive}/version"), b"3\n")?;
        z.finish()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_is_written_reads_back() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("step_5");
        let tensors = vec![
            ("model.inner.a".to_string(), vec![2, 3], vec![1.0f32, -2.0, 3.5, 0.0, f32::MIN_POSITIVE, 6.0]),
            ("model.inner.b".to_string(), vec![4], vec![0.25f32; 4]),
        ];
        super::write(&f, &tensors).unwrap();
        let back = crate::util::torch_zip::read(&f, "").unwrap();
        for (name, shape, values) in &tensors {
            assert_eq!((&back[name].shape, &back[name].values), (shape, values), "{name}");
        }
    }
}
