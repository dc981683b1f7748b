//! A strict reader of `torch.save` files (the zip format of PyTorch >= 1.6): `ARCHIVE/data.pkl`
//! is a pickle whose tensors point, through persistent ids, at raw storages `ARCHIVE/data/<key>`.
//! Only what a state dict needs is understood: dicts (plain and `collections.OrderedDict`),
//! tensors rebuilt by `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter`, and the usual
//! scalars, strings, lists and tuples. Every tensor must be a contiguous view inside its storage
//! (a transposed or out-of-range view is an error, never garbage); float32, bfloat16 and float16
//! storages become float32, read straight into the output buffer (an ARC puzzle table is ~2 GB).
//! A pre-1.6 (non-zip) file, a missing storage or a short one is an error naming it.
//!
//! A hostile file meets budgets a real checkpoint never reaches: `data.pkl` at most
//! [`MAX_PICKLE_BYTES`]; values nested at most [`MAX_DEPTH`] deep; copies of remembered values
//! (the pickle's memo) at most [`COPY_BUDGET_FLOOR`] plus 32 bytes per pickle byte; tensors
//! materialised at most [`TENSOR_BUDGET_FLOOR`] plus 8 bytes per byte of the file; every size and
//! offset computed with checked arithmetic. A key that appears twice in a state dict is an error.

use super::tensors::F32Tensor;
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// A value of the pickle, as far as a state dict needs.
#[derive(Debug, Clone)]
#[allow(dead_code)] // scalar payloads are kept for the error messages (Debug)
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Storage {
        key: String,
        dtype: Dtype,
        numel: usize,
    },
    Tensor(TensorRef),
    /// Any other reduced object (kept only to name it in errors).
    Object(String),
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    BF16,
    F16,
}

impl Dtype {
    fn of_storage(name: &str) -> Result<Dtype> {
        Ok(match name {
            "FloatStorage" => Dtype::F32,
            "BFloat16Storage" => Dtype::BF16,
            "HalfStorage" => Dtype::F16,
            other => bail!("storage type torch.{other} is not supported (float32, bfloat16 and float16 are)"),
        })
    }
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
        }
    }
}

#[derive(Debug, Clone)]
struct TensorRef {
    key: String,
    dtype: Dtype,
    storage_numel: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn as_usize(v: &Value, what: &str) -> Result<usize> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        other => bail!("{what}: expected a non-negative integer, found {}", other.brief()),
    }
}

fn as_usizes(v: &Value, what: &str) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs.iter().map(|x| as_usize(x, what)).collect(),
        other => bail!("{what}: expected a tuple of integers, found {}", other.brief()),
    }
}

/// Largest `data.pkl` read (a state dict's pickle is a few kilobytes per hundred tensors).
pub const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Deepest nesting of containers (a state dict's is about 5).
pub const MAX_DEPTH: usize = 64;
/// Bytes of memo copies always allowed; 32 more per byte of pickle.
pub const COPY_BUDGET_FLOOR: usize = 32 << 20;
/// Bytes of float32 tensors always allowed; 8 more per byte of the file (a float16 storage
/// doubles, a storage shared by two tensors is read twice).
pub const TENSOR_BUDGET_FLOOR: u64 = 64 << 20;

impl Value {
    /// A short description for error messages (never the whole value: it may be huge).
    fn brief(&self) -> String {
        let mut s = match self {
            Value::Str(x) => format!("the string {:?}", x.chars().take(60).collect::<String>()),
            Value::Bytes(b) => format!("{} bytes", b.len()),
            Value::Tuple(x) => format!("a tuple of {} items", x.len()),
            Value::List(x) => format!("a list of {} items", x.len()),
            Value::Dict(x) => format!("a dict of {} entries", x.len()),
            Value::Global(m, n) => format!("{m}.{n}"),
            Value::Storage { key, numel, .. } => format!("storage {key} ({numel} values)"),
            Value::Tensor(t) => format!("a tensor of shape {:?}", t.shape),
            Value::Object(o) => format!("a {o} object"),
            other => format!("{other:?}"),
        };
        s.truncate(200);
        s
    }

    /// Approximate bytes a copy of this value takes, or `None` past `limit`.
    fn weight(&self, limit: usize) -> Option<usize> {
        let mut total = 0usize;
        let mut todo = vec![self];
        while let Some(v) = todo.pop() {
            total += std::mem::size_of::<Value>()
                + match v {
                    Value::Str(x) | Value::Global(x, _) | Value::Object(x) => x.len(),
                    Value::Bytes(b) => b.len(),
                    Value::Tensor(t) => t.key.len() + 16 * t.shape.len(),
                    Value::Storage { key, .. } => key.len(),
                    Value::Tuple(x) | Value::List(x) => {
                        todo.extend(x.iter());
                        0
                    }
                    Value::Dict(x) => {
                        todo.extend(x.iter().flat_map(|(k, v)| [k, v]));
                        0
                    }
                    _ => 0,
                };
            if total > limit {
                return None;
            }
        }
        Some(total)
    }

    /// Nesting depth, or `None` past `limit` (never recurses deeper than `limit`).
    fn depth(&self, limit: usize) -> Option<usize> {
        if limit == 0 {
            return None;
        }
        let inner = match self {
            Value::Tuple(x) | Value::List(x) => x.iter().map(|v| v.depth(limit - 1)).try_fold(0, |a, d| d.map(|d| a.max(d)))?,
            Value::Dict(x) => x.iter().flat_map(|(k, v)| [k, v]).map(|v| v.depth(limit - 1)).try_fold(0, |a, d| d.map(|d| a.max(d)))?,
            _ => return Some(1),
        };
        Some(inner + 1)
    }
}

/// Refuses to nest `items` into a container when that would exceed [`MAX_DEPTH`].
fn nestable<'a>(items: impl IntoIterator<Item = &'a Value>, at: usize) -> Result<()> {
    for v in items {
        if v.depth(MAX_DEPTH - 1).is_none() {
            bail!("data.pkl: containers nested more than {MAX_DEPTH} deep at byte {at}: not a checkpoint");
        }
    }
    Ok(())
}

/// The pickle machine: just the opcodes `torch.save` (protocol 2, and 3/4 for good measure) emits.
fn unpickle(bytes: &[u8]) -> Result<Value> {
    let mut m = Machine {
        bytes,
        i: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        // Remembered values are copied when stored and when recalled; the copies share one budget.
        copy_budget: COPY_BUDGET_FLOOR.saturating_add(bytes.len().saturating_mul(32)),
    };
    loop {
        let at = m.i;
        let op = m.take(1)?[0];
        let done = m.scalar(op, at)? || m.text(op)? || m.remember(op, at)? || m.build(op, at)? || m.call(op)?;
        if op == b'.' {
            return m.pop();
        }
        anyhow::ensure!(done, "data.pkl: unsupported pickle opcode 0x{op:02x} at byte {at}");
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    /// The next byte to read.
    i: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    copy_budget: usize,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let s = self.bytes.get(self.i..self.i + n).ok_or_else(|| anyhow!("data.pkl ends inside an opcode at byte {}", self.i))?;
        self.i += n;
        Ok(s)
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.bytes[self.i..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| anyhow!("data.pkl: unterminated line at byte {}", self.i))?;
        let s = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.i += end + 1;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into()?))
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| anyhow!("data.pkl: stack underflow"))
    }

    /// The items above the topmost MARK (which goes too).
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self.stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or_else(|| anyhow!("data.pkl: no MARK"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    /// A copy of a remembered value, weighed before it is made and paid from `budget`.
    fn copy(budget: &mut usize, v: Option<&Value>, op: &str, at: usize) -> Result<Value> {
        let v = v.ok_or_else(|| anyhow!("data.pkl: {op} at byte {at} names nothing"))?;
        let w = v.weight(*budget).ok_or_else(|| {
            anyhow!("data.pkl: copies of remembered values pass {} MB at byte {at}: not a checkpoint", COPY_BUDGET_FLOOR >> 20)
        })?;
        *budget -= w;
        Ok(v.clone())
    }

    /// Framing, None, booleans, integers, floats. False when `op` is none of them.
    fn scalar(&mut self, op: u8, at: usize) -> Result<bool> {
        let v = match op {
            0x80 => {
                self.take(1)?; // PROTO
                return Ok(true);
            }
            0x95 => {
                self.take(8)?; // FRAME
                return Ok(true);
            }
            b'.' => return Ok(true),
            b'(' => Value::Mark,
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => Value::Int(i32::from_le_bytes(self.take(4)?.try_into()?) as i64),
            b'K' => Value::Int(self.take(1)?[0] as i64),
            b'M' => Value::Int(u16::from_le_bytes(self.take(2)?.try_into()?) as i64),
            0x8a => {
                let n = self.take(1)?[0] as usize;
                let b = self.take(n)?;
                anyhow::ensure!(n <= 8, "data.pkl: integer of {n} bytes at byte {at}");
                let mut v: i64 = 0;
                for (k, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n); // negative
                }
                Value::Int(v)
            }
            b'G' => Value::Float(f64::from_be_bytes(self.take(8)?.try_into()?)),
            _ => return Ok(false),
        };
        self.stack.push(v);
        Ok(true)
    }

    /// Strings, bytes and global names.
    fn text(&mut self, op: u8) -> Result<bool> {
        let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).context("data.pkl: string is not UTF-8");
        let v = match op {
            b'X' => {
                let n = self.u32()? as usize;
                Value::Str(utf8(self.take(n)?)?)
            }
            0x8c => {
                let n = self.take(1)?[0] as usize;
                Value::Str(utf8(self.take(n)?)?)
            }
            b'U' => {
                let n = self.take(1)?[0] as usize;
                Value::Str(String::from_utf8_lossy(self.take(n)?).into_owned())
            }
            b'T' => {
                let n = self.u32()? as usize;
                Value::Str(String::from_utf8_lossy(self.take(n)?).into_owned())
            }
            b'C' => {
                let n = self.take(1)?[0] as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            b'B' => {
                let n = self.u32()? as usize;
                Value::Bytes(self.take(n)?.to_vec())
            }
            b'c' => Value::Global(self.line()?, self.line()?),
            0x93 => {
                let n = self.pop()?;
                match (self.pop()?, n) {
                    (Value::Str(m), Value::Str(n)) => Value::Global(m, n),
                    (m, n) => bail!("data.pkl: STACK_GLOBAL of {} and {}", m.brief(), n.brief()),
                }
            }
            _ => return Ok(false),
        };
        self.stack.push(v);
        Ok(true)
    }

    /// The memo: PUT (BINPUT, LONG_BINPUT, MEMOIZE) and GET (BINGET, LONG_BINGET), each a copy.
    fn remember(&mut self, op: u8, at: usize) -> Result<bool> {
        match op {
            b'q' | b'r' | 0x94 => {
                let k = match op {
                    b'q' => self.take(1)?[0] as u32,
                    b'r' => self.u32()?,
                    _ => self.memo.len() as u32,
                };
                let v = Self::copy(&mut self.copy_budget, self.stack.last(), "a memo PUT", at)?;
                self.memo.insert(k, v);
            }
            b'h' | b'j' => {
                let k = if op == b'h' { self.take(1)?[0] as u32 } else { self.u32()? };
                let v = Self::copy(&mut self.copy_budget, self.memo.get(&k), &format!("memo GET {k}"), at)?;
                self.stack.push(v);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Containers: empty ones, from a MARK, from the last 1-3 items, and items added to one. Every
    /// item nested is checked against [`MAX_DEPTH`].
    fn build(&mut self, op: u8, at: usize) -> Result<bool> {
        match op {
            b'}' => self.stack.push(Value::Dict(vec![])),
            b']' => self.stack.push(Value::List(vec![])),
            b')' => self.stack.push(Value::Tuple(vec![])),
            b't' | b'l' | b'd' => {
                let items = self.pop_mark()?;
                nestable(&items, at)?;
                self.stack.push(match op {
                    b't' => Value::Tuple(items),
                    b'l' => Value::List(items),
                    _ => Value::Dict(pairs(items)?),
                });
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                anyhow::ensure!(self.stack.len() >= n, "data.pkl: stack underflow");
                let items = self.stack.split_off(self.stack.len() - n);
                nestable(&items, at)?;
                self.stack.push(Value::Tuple(items));
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![self.pop()?] } else { self.pop_mark()? };
                nestable(&items, at)?;
                match self.stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => bail!("data.pkl: APPEND to a non-list"),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = self.pop()?;
                    vec![self.pop()?, v]
                } else {
                    self.pop_mark()?
                };
                nestable(&items, at)?;
                let items = pairs(items)?;
                match self.stack.last_mut() {
                    Some(Value::Dict(d)) => d.extend(items),
                    _ => bail!("data.pkl: SETITEM on a non-dict"),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// BUILD (object state, not needed), persistent ids (storages) and REDUCE (calls).
    fn call(&mut self, op: u8) -> Result<bool> {
        match op {
            b'b' => {
                self.pop()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                self.stack.push(persistent(pid)?);
            }
            b'R' => {
                let args = self.pop()?;
                let f = self.pop()?;
                self.stack.push(reduce(f, args)?);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    anyhow::ensure!(items.len().is_multiple_of(2), "data.pkl: odd number of dict items");
    let mut it = items.into_iter();
    let mut out = vec![];
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// `('storage', torch.<T>Storage, key, location, numel)`.
fn persistent(pid: Value) -> Result<Value> {
    let Value::Tuple(t) = pid else { bail!("data.pkl: persistent id {} is not a tuple", pid.brief()) };
    match t.as_slice() {
        [Value::Str(kind), Value::Global(_, ty), Value::Str(key), _, numel] if kind == "storage" => {
            Ok(Value::Storage { key: key.clone(), dtype: Dtype::of_storage(ty)?, numel: as_usize(numel, "storage size")? })
        }
        _ => bail!("data.pkl: unsupported persistent id of {} items", t.len()),
    }
}

fn reduce(f: Value, args: Value) -> Result<Value> {
    let Value::Global(m, n) = &f else { bail!("data.pkl: REDUCE of {}", f.brief()) };
    let Value::Tuple(a) = args else { bail!("data.pkl: {m}.{n} called with {}", args.brief()) };
    Ok(match (m.as_str(), n.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
            let (Some(Value::Storage { key, dtype, numel }), Some(off), Some(size), Some(stride)) =
                (a.first(), a.get(1), a.get(2), a.get(3))
            else {
                bail!("data.pkl: {n} with arguments {}", a.iter().map(Value::brief).collect::<Vec<_>>().join(", "))
            };
            Value::Tensor(TensorRef {
                key: key.clone(),
                dtype: *dtype,
                storage_numel: *numel,
                offset: as_usize(off, "storage offset")?,
                shape: as_usizes(size, "tensor size")?,
                stride: as_usizes(stride, "tensor stride")?,
            })
        }
        ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
            a.into_iter().next().ok_or_else(|| anyhow!("data.pkl: {n} without data"))?
        }
        ("collections", "OrderedDict") => Value::Dict(vec![]),
        _ => Value::Object(format!("{m}.{n}")),
    })
}

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
