//! Host-side tensors and safetensors files: reading any numeric dtype into f64 (for fixtures and
//! checkpoints), writing float32 tensors with names.

use anyhow::{Context, Result, bail};
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// A tensor on the host: shape and values widened to f64 (bools as 0/1).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl HostTensor {
    pub fn f32s(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }
    pub fn i32s(&self) -> Vec<i32> {
        self.values.iter().map(|&v| v as i32).collect()
    }
    pub fn max_abs(&self) -> f64 {
        self.values.iter().fold(0.0, |m, v| m.max(v.abs()))
    }
}

fn widen(dtype: Dtype, bytes: &[u8]) -> Result<Vec<f64>> {
    macro_rules! le {
        ($t:ty, $n:expr) => {
            bytes.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f64).collect()
        };
    }
    Ok(match dtype {
        Dtype::F64 => le!(f64, 8),
        Dtype::F32 => le!(f32, 4),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        Dtype::I64 => le!(i64, 8),
        Dtype::I32 => le!(i32, 4),
        Dtype::I16 => le!(i16, 2),
        Dtype::I8 => bytes.iter().map(|&b| b as i8 as f64).collect(),
        Dtype::U8 => bytes.iter().map(|&b| b as f64).collect(),
        Dtype::BOOL => bytes.iter().map(|&b| (b != 0) as u8 as f64).collect(),
        other => bail!("unsupported dtype {other:?}"),
    })
}

/// Reads every tensor of a safetensors file, sorted by name.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let bytes = file_bytes(path)?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let values = widen(view.dtype(), view.data()).with_context(|| format!("{}: tensor `{name}`", path.display()))?;
        out.insert(name.to_string(), HostTensor { dtype: format!("{:?}", view.dtype()), shape: view.shape().to_vec(), values });
    }
    Ok(out)
}

/// A file's bytes: mapped where the system allows (a checkpoint holds gigabytes, read once),
/// read into memory otherwise.
fn file_bytes(path: &Path) -> Result<FileBytes> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(map) = crate::util::fs::map_read_only(&file) {
        return Ok(FileBytes::Mapped(map));
    }
    std::fs::read(path).map(FileBytes::Read).with_context(|| format!("cannot read {}", path.display()))
}

enum FileBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

/// A tensor widened to float32 at most (weights: never to float64, an ARC table is ~2 GB).
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Reads the float tensors (float32, bfloat16, float16) of a safetensors file as float32.
pub fn read_safetensors_f32(path: &Path) -> Result<BTreeMap<String, F32Tensor>> {
    let bytes = file_bytes(path)?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let b = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => bail!("{}: tensor `{name}` is {other:?}; weights must be float32, bfloat16 or float16", path.display()),
        };
        out.insert(name.to_string(), F32Tensor { shape: view.shape().to_vec(), values });
    }
    Ok(out)
}

/// Writes float32 tensors (name, shape, values) plus string metadata, atomically, streaming each
/// tensor's bytes to the file: no second copy of the data in memory (an ARC checkpoint's puzzle
/// table is 1.8 GB). The bytes are those of a safetensors file (tensors in name order, as the
/// `safetensors` crate lays out float32 tensors) whose JSON header has its keys sorted at every
/// level, so the same tensors always give the same bytes and checksums (the crate writes its
/// metadata map in hash order).
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    use std::io::Write;
    /// One tensor's header entry; fields in sorted order.
    #[derive(serde::Serialize)]
    struct Info<'a> {
        data_offsets: [usize; 2],
        dtype: &'static str,
        shape: &'a [usize],
    }
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum Entry<'a> {
        Metadata(BTreeMap<String, String>),
        Tensor(Info<'a>),
    }
    let mut order: Vec<&(String, Vec<usize>, Vec<f32>)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut header: BTreeMap<&str, Entry> = BTreeMap::new();
    if let Some(m) = metadata {
        header.insert("__metadata__", Entry::Metadata(m.into_iter().collect()));
    }
    let mut offset = 0usize;
    for (name, shape, values) in &order {
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if count != Some(values.len()) {
            bail!("{}: tensor `{name}` has shape {shape:?} but {} values", path.display(), values.len());
        }
        if name == "__metadata__" {
            bail!("{}: a tensor may not be named `__metadata__` (the header's metadata key)", path.display());
        }
        let end = offset + 4 * values.len();
        if header.insert(name, Entry::Tensor(Info { data_offsets: [offset, end], dtype: "F32", shape })).is_some() {
            bail!("{}: tensor `{name}` is named twice", path.display());
        }
        offset = end;
    }
    let mut text = serde_json::to_vec(&header)?;
    text.resize(text.len().next_multiple_of(8), b' ');
    crate::util::fs::write_atomic_with(path, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(&text)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for (_, _, values) in &order {
            for chunk in values.chunks(1 << 14) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
                w.write_all(&buf)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `safetensors` crate writes for the same tensors, with its header's keys sorted.
    fn crate_bytes(tensors: &[(String, Vec<usize>, Vec<f32>)], metadata: Option<std::collections::HashMap<String, String>>) -> Vec<u8> {
        let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .zip(&bytes)
            .map(|((n, s, _), b)| (n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        let file = safetensors::tensor::serialize(views, metadata).unwrap();
        let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n]).unwrap();
        let mut text = serde_json::to_vec(&header).unwrap();
        text.resize(text.len().next_multiple_of(8), b' ');
        [&(text.len() as u64).to_le_bytes()[..], &text, &file[8 + n..]].concat()
    }

    #[test]
    fn streamed_files_are_the_crates_bytes_with_a_sorted_header() {
        let dir = tempfile::tempdir().unwrap();
        let t = |name: &str, shape: &[usize], start: f32| {
            let n: usize = shape.iter().product();
            (name.to_string(), shape.to_vec(), (0..n).map(|i| start + i as f32 * 0.5).collect::<Vec<f32>>())
        };
        let tensors = vec![t("z.last", &[3, 2], 1.0), t("a.first", &[4], -2.0), t("m.empty", &[0, 5], 0.0), t("B.upper", &[1], 7.0)];
        let meta = std::collections::HashMap::from([("step".to_string(), "12".to_string()), ("format".to_string(), "trm".to_string())]);
        for metadata in [None, Some(meta)] {
            let p = dir.path().join("t.safetensors");
            write_safetensors(&p, &tensors, metadata.clone()).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), crate_bytes(&tensors, metadata));
            let back = read_safetensors_f32(&p).unwrap();
            assert_eq!(back["z.last"].values, tensors[0].2);
        }
        let bad = vec![t("a", &[2], 0.0), ("b".to_string(), vec![3], vec![1.0])];
        assert!(write_safetensors(&dir.path().join("bad.safetensors"), &bad, None).unwrap_err().to_string().contains("`b` has shape [3]"));
        let twice = vec![t("a", &[2], 0.0), t("a", &[1], 0.0)];
        assert!(write_safetensors(&dir.path().join("twice.safetensors"), &twice, None).unwrap_err().to_string().contains("named twice"));
        let reserved = vec![t("__metadata__", &[1], 0.0)];
        assert!(
            write_safetensors(&dir.path().join("r.safetensors"), &reserved, None).unwrap_err().to_string().contains("may not be named")
        );
    }
}
