//! JSON as Python's `json.dump(obj, f)` writes it with its defaults, byte for byte: `", "` between
//! items, `": "` after keys, non-ASCII escaped as `\uXXXX`, floats as Python's `repr`. The
//! reference's data builders write `identifiers.json`, `test_puzzles.json` and `dataset.json`
//! that way, and trm writes the same bytes (object keys in the order the value serialises them).

use anyhow::Result;
use serde::Serialize;
// Control characters: serde_json's default escapes (\n, \t, ..., else \u00XX) are Python's.
use serde_json::ser::Formatter;
use std::io::{self, Write};
use std::path::Path;

struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, value: f64) -> io::Result<()> {
        w.write_all(python_float(value).as_bytes())
    }

    fn write_f32<W: ?Sized + Write>(&mut self, w: &mut W, value: f32) -> io::Result<()> {
        w.write_all(python_float(value as f64).as_bytes())
    }

    /// `ensure_ascii=True`: every character above 0x7f as `\uXXXX` (UTF-16 surrogate pairs).
    fn write_string_fragment<W: ?Sized + Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// Python's `repr(float)`: the shortest round-trip digits, a `.0` on integral values, and
/// exponent form (`1e-05`, `1e+16`) outside [1e-4, 1e16).
pub fn python_float(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "NaN".into()
        } else if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let a = v.abs();
    if v == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{v:?}"); // shortest round-trip, with ".0" when integral
        if s.contains('e') { format!("{v}") } else { s }
    } else {
        let s = format!("{v:e}"); // e.g. 1e-5, 1.5e16
        let (mantissa, exp) = s.split_once('e').expect("exponent form");
        let exp: i32 = exp.parse().expect("integer exponent");
        format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    }
}

/// A dict in insertion order (serde_json's own objects are sorted).
pub struct Ordered<K, V>(pub Vec<(K, V)>);

impl<K: Serialize, V: Serialize> Serialize for Ordered<K, V> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

/// `value` as Python's `json.dumps(value)`.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let mut out = Vec::new();
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, PythonFormatter))?;
    Ok(String::from_utf8(out).expect("JSON is UTF-8"))
}

/// Writes `value` to `path` atomically, as Python's `json.dump(value, f)`.
pub fn write<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    crate::util::fs::write_atomic(path, to_string(value)?.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected strings printed by Python 3.11's json.dumps and repr.
    #[test]
    fn matches_python() {
        let v = serde_json::json!({"a": [1, 2, [3, 4]], "b": "x\u{e9}\u{1f600}\n", "c": 4.154166666666667, "d": 1.0});
        assert_eq!(to_string(&v).unwrap(), r#"{"a": [1, 2, [3, 4]], "b": "x\u00e9\ud83d\ude00\n", "c": 4.154166666666667, "d": 1.0}"#);
        for (x, s) in [
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (123456.0, "123456.0"),
            (0.1, "0.1"),
            (-2.5e-7, "-2.5e-07"),
        ] {
            assert_eq!(python_float(x), s, "{x}");
        }
    }
}
