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
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let values = widen(view.dtype(), view.data()).with_context(|| format!("{}: tensor `{name}`", path.display()))?;
        out.insert(name.to_string(), HostTensor { dtype: format!("{:?}", view.dtype()), shape: view.shape().to_vec(), values });
    }
    Ok(out)
}

/// A tensor widened to float32 at most (weights: never to float64, an ARC table is ~2 GB).
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Reads the float tensors (float32, bfloat16, float16) of a safetensors file as float32.
pub fn read_safetensors_f32(path: &Path) -> Result<BTreeMap<String, F32Tensor>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
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

/// Writes float32 tensors (name, shape, values) plus string metadata, atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| Ok((n.clone(), safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_>>()?;
    let data = safetensors::tensor::serialize(views, metadata).context("cannot serialise tensors")?;
    crate::util::fs::write_atomic(path, &canonical_header(data)?)
}

/// Rewrites a serialised safetensors file's JSON header with sorted keys (safetensors writes its
/// metadata map in hash order), so that the same tensors always give the same bytes and
/// checksums. Offsets are relative to the data, so only the header changes.
fn canonical_header(file: Vec<u8>) -> Result<Vec<u8>> {
    let n = u64::from_le_bytes(file[..8].try_into()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(&file[8..8 + n])?;
    let mut text = serde_json::to_vec(&header)?; // serde_json objects are sorted maps
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + text.len() + file.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&file[8 + n..]);
    Ok(out)
}
