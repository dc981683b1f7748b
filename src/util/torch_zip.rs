//! A strict reader of `torch.save` files (the zip format of PyTorch >= 1.6): `ARCHIVE/data.pkl`
//! is a pickle (read by `torch_pickle`) whose tensors point, through persistent ids, at raw
//! storages `ARCHIVE/data/<key>`. Every tensor must be a contiguous view inside its storage
//! (a transposed or out-of-range view is an error, never garbage); float32, bfloat16 and float16
//! storages become float32, read straight into the output buffer (an ARC puzzle table is ~2 GB).
//! A pre-1.6 (non-zip) file, a missing storage or a short one is an error naming it.
//!
//! A hostile file meets budgets a real checkpoint never reaches: `data.pkl` at most
//! [`MAX_PICKLE_BYTES`] (and the pickle's own budgets, `torch_pickle`); tensors materialised at
//! most [`TENSOR_BUDGET_FLOOR`] plus 8 bytes per byte of the file; every size and offset
//! computed with checked arithmetic. A key that appears twice in a state dict is an error.

use super::tensors::F32Tensor;
use super::torch_pickle::{Dtype, TensorRef, Value, unpickle};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

/// Largest `data.pkl` read (a state dict's pickle is a few kilobytes per hundred tensors).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Bytes of float32 tensors always allowed; 8 more per byte of the file (a float16 storage
/// doubles, a storage shared by two tensors is read twice).
pub const TENSOR_BUDGET_FLOOR: u64 = 64 << 20;

/// The state dict a key path names: the top level (`""`), or a nested entry (`"model"`,
/// `"ema"`, `"a.b"`), as `name -> tensor`.
fn pick<'a>(top: &'a Value, key: &str) -> Result<&'a [(Value, Value)]> {
    let mut cur = top;
    if !key.is_empty() {
        for part in key.split('.') {
            let Value::Dict(d) = cur else { bail!("`{part}` of --key {key}: not inside a dict") };
            cur = d
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == part))
                .map(|(_, v)| v)
                .ok_or_else(|| anyhow!("no entry `{part}` (of {key}); entries: {}", names(d)))?;
        }
    }
    let Value::Dict(d) = cur else { bail!("the checkpoint's {} is not a dict of tensors", if key.is_empty() { "top level" } else { key }) };
    if d.iter().any(|(_, v)| matches!(v, Value::Tensor(_))) {
        return Ok(d);
    }
    // A wrapper ({"model": {...}, "config": ...}): the one entry that is a dict of tensors.
    let inner: Vec<&(Value, Value)> =
        d.iter().filter(|(_, v)| matches!(v, Value::Dict(x) if x.iter().any(|(_, t)| matches!(t, Value::Tensor(_))))).collect();
    match inner.as_slice() {
        [(_, Value::Dict(x))] => Ok(x),
        [] => bail!("no tensors in {} (entries: {})", if key.is_empty() { "the checkpoint" } else { key }, names(d)),
        many => bail!(
            "the checkpoint holds several state dicts ({}): choose one with a #key suffix, e.g. FILE#{}",
            many.iter().map(|(k, _)| k.brief()).collect::<Vec<_>>().join(", "),
            match &many[0].0 {
                Value::Str(s) => s.as_str(),
                _ => "model",
            }
        ),
    }
}

fn names(d: &[(Value, Value)]) -> String {
    let mut s = d.iter().take(40).map(|(k, _)| if let Value::Str(s) = k { s.clone() } else { k.brief() }).collect::<Vec<_>>().join(", ");
    if d.len() > 40 {
        s.push_str(&format!(", ... ({} in all)", d.len()));
    }
    s
}

/// Whether a file is a torch checkpoint (by its first bytes: a zip archive, or the pickle of the
/// legacy format, which `read` refuses with advice).
pub fn is_torch_file(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && (&magic == b"PK\x03\x04" || magic[0] == 0x80)
}

/// Reads the tensors of a `torch.save` state dict; `key` picks a nested dict ("" = the top
/// level, or the single dict of tensors inside it).
pub fn read(path: &Path, key: &str) -> Result<BTreeMap<String, F32Tensor>> {
    let f = path.display();
    let mut head = [0u8; 2];
    std::fs::File::open(path).and_then(|mut x| x.read_exact(&mut head)).with_context(|| format!("cannot read {f}"))?;
    if head[0] == 0x80 {
        bail!("{f}: a legacy (pre-1.6, non-zip) torch file; re-save it with a current PyTorch: torch.save(torch.load(p), p)");
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {f}"))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).with_context(|| format!("{f}: not a torch zip checkpoint"))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{f}: no ARCHIVE/data.pkl inside: not a torch.save file"))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    if let Ok(mut b) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        b.read_to_string(&mut s)?;
        anyhow::ensure!(s.trim() == "little", "{f}: byte order `{}` (only little-endian files are read)", s.trim());
    }
    let mut pkl = vec![];
    let entry = zip.by_name(&pkl_name)?;
    anyhow::ensure!(
        entry.size() <= MAX_PICKLE_BYTES,
        "{f}: {pkl_name} says it holds {} bytes; a checkpoint's is far smaller (at most {} MB are read)",
        entry.size(),
        MAX_PICKLE_BYTES >> 20
    );
    entry.take(MAX_PICKLE_BYTES + 1).read_to_end(&mut pkl).with_context(|| format!("{f}: cannot read {pkl_name}"))?;
    anyhow::ensure!(pkl.len() as u64 <= MAX_PICKLE_BYTES, "{f}: {pkl_name} is over {} MB", MAX_PICKLE_BYTES >> 20);
    let top = unpickle(&pkl).with_context(|| format!("{f}: {pkl_name}"))?;
    drop(pkl);
    let dict = pick(&top, key).with_context(|| format!("{f}"))?;
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut tensor_budget = TENSOR_BUDGET_FLOOR.saturating_add(file_len.saturating_mul(8));
    let mut out = BTreeMap::new();
    for (k, v) in dict {
        let Value::Str(name) = k else { bail!("{f}: a state-dict key is {}, not a string", k.brief()) };
        let t = match v {
            Value::Tensor(t) => t,
            Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) | Value::Str(_) => {
                bail!("{f}: `{name}` is not a tensor ({})", v.brief())
            }
            other => bail!("{f}: `{name}` is not a tensor ({})", if let Value::Object(o) = other { o.as_str() } else { "a container" }),
        };
        if out.contains_key(name) {
            bail!("{f}: the state dict holds `{name}` twice; a torch state dict cannot, so the file was edited or is not one");
        }
        let tensor = read_tensor(&mut zip, &prefix, name, t, &mut tensor_budget).with_context(|| format!("{f}: tensor `{name}`"))?;
        out.insert(name.clone(), tensor);
    }
    Ok(out)
}

fn read_tensor<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    prefix: &str,
    name: &str,
    t: &TensorRef,
    budget: &mut u64,
) -> Result<F32Tensor> {
    let overflow = || anyhow!("its size {:?} (offset {}) overflows: not a real tensor", t.shape, t.offset);
    let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(overflow)?;
    anyhow::ensure!(t.stride.len() == t.shape.len(), "{} strides for {} dimensions", t.stride.len(), t.shape.len());
    // Contiguous (row-major) strides; dimensions of size 1 may carry any stride.
    let mut expect = 1usize;
    for d in (0..t.shape.len()).rev() {
        if t.shape[d] != 1 && t.stride[d] != expect {
            bail!("a non-contiguous view (size {:?}, stride {:?}): save `{name}.contiguous()` instead", t.shape, t.stride);
        }
        expect = expect.checked_mul(t.shape[d]).ok_or_else(overflow)?;
    }
    let end = t.offset.checked_add(numel).ok_or_else(overflow)?;
    anyhow::ensure!(end <= t.storage_numel, "its view ends at {end} but its storage holds {}", t.storage_numel);
    let out_bytes = (numel as u64).checked_mul(4).ok_or_else(overflow)?;
    anyhow::ensure!(
        out_bytes <= *budget,
        "its {numel} values would take the checkpoint's tensors past {} MB, more than a file of this size holds",
        (out_bytes.saturating_add(TENSOR_BUDGET_FLOOR) >> 20)
    );
    *budget -= out_bytes;
    let entry = format!("{prefix}data/{}", t.key);
    let mut r = zip.by_name(&entry).map_err(|_| anyhow!("its storage {entry} is missing from the archive"))?;
    let bytes = r.size();
    let want = (t.storage_numel as u64).checked_mul(t.dtype.size() as u64).ok_or_else(overflow)?;
    anyhow::ensure!(bytes == want, "its storage {entry} has {bytes} bytes, {want} expected ({} values)", t.storage_numel);
    // Skip to the view, then read exactly its values.
    std::io::copy(&mut (&mut r).take(t.offset as u64 * t.dtype.size() as u64), &mut std::io::sink())?;
    let mut values = vec![0f32; numel];
    match t.dtype {
        Dtype::F32 => {
            // SAFETY: f32 has no invalid bit patterns; the buffer is exactly numel * 4 bytes.
            let buf = unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr() as *mut u8, numel * 4) };
            r.read_exact(buf)?;
            if cfg!(target_endian = "big") {
                values.iter_mut().for_each(|v| *v = f32::from_bits(v.to_bits().swap_bytes()));
            }
        }
        Dtype::BF16 | Dtype::F16 => {
            let mut raw = vec![0u8; numel * 2];
            r.read_exact(&mut raw)?;
            for (v, c) in values.iter_mut().zip(raw.chunks_exact(2)) {
                let bits = u16::from_le_bytes([c[0], c[1]]);
                *v = if t.dtype == Dtype::BF16 { half::bf16::from_bits(bits).to_f32() } else { half::f16::from_bits(bits).to_f32() };
            }
        }
    }
    Ok(F32Tensor { shape: t.shape.clone(), values })
}
