//! The pickle inside a `torch.save` file (`ARCHIVE/data.pkl`), read strictly: only the opcodes
//! `torch.save` emits (protocol 2, and 3/4 for good measure), and only what a state dict needs:
//! dicts (plain and `collections.OrderedDict`), tensors rebuilt by
//! `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` over storages named by persistent
//! ids, and the usual scalars, strings, lists and tuples. Anything else is kept only by name,
//! for error messages. `torch_zip` reads the archive around it.
//!
//! A hostile pickle meets budgets a real checkpoint never reaches: values nested at most
//! [`MAX_DEPTH`] deep; copies of remembered values (the pickle's memo) at most
//! [`COPY_BUDGET_FLOOR`] plus 32 bytes per pickle byte.

use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashMap;

/// A value of the pickle, as far as a state dict needs.
#[derive(Debug, Clone)]
#[allow(dead_code)] // scalar payloads are kept for the error messages (Debug)
pub(super) enum Value {
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
    pub(super) fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::BF16 | Dtype::F16 => 2,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct TensorRef {
    pub(super) key: String,
    pub(super) dtype: Dtype,
    pub(super) storage_numel: usize,
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<usize>,
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

/// Deepest nesting of containers (a state dict's is about 5).
pub const MAX_DEPTH: usize = 64;
/// Bytes of memo copies always allowed; 32 more per byte of pickle.
pub const COPY_BUDGET_FLOOR: usize = 32 << 20;

impl Value {
    /// A short description for error messages (never the whole value: it may be huge).
    pub(super) fn brief(&self) -> String {
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
pub(super) fn unpickle(bytes: &[u8]) -> Result<Value> {
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
