//! CIFAR's python version, the layout torchvision downloads (`cifar-10-batches-py/`,
//! `cifar-100-python/`): a strict reader for the pickles it holds.
//!
//! Each batch file is a pickled dict whose `data` is a numpy `uint8` array of shape
//! (images, 3072) — each row one image's R, G and B planes, row-major 32×32, exactly as in the
//! binary version — beside one list of ints per label kind (`labels`; `fine_labels` and
//! `coarse_labels`). The meta file is a dict of class-name lists. The official files were written
//! by Python 2's cPickle with protocol 2: keys and strings are byte strings, and the array is a
//! call of numpy's `_reconstruct` whose state carries the raw pixel bytes.
//!
//! The reader is a small pickle machine for what such files contain and nothing more: protocols
//! 2 to 4 (Python 2's cPickle, or Python 3 for a batch re-saved there), containers, ints, byte
//! and text strings, and four callables — numpy's `_reconstruct`, `ndarray` and `dtype`, and
//! `_codecs.encode` (how Python 3's protocol 2 spells bytes). Nothing is executed: any other
//! opcode or global is an error naming it and its byte offset. Every length is checked against
//! the bytes that remain, so a truncated or corrupt file gives an error, never a panic or an
//! allocation larger than the file. Crates such as `serde-pickle` refuse numpy's globals (or
//! replace them by `None`, dropping the pixels), hence this reader.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use crate::{Error, Result};

/// The pickle protocols the reader accepts: 2 is what CIFAR's files use; 3 and 4 are Python 3's
/// defaults for a re-saved batch (5 stores numpy arrays out of band and is refused).
const PROTOCOLS: std::ops::RangeInclusive<u8> = 2..=4;

/// How deep containers may nest. CIFAR's pickles nest three deep (a dict of lists; an array's
/// state tuple holding its shape tuple); the bound keeps a hostile file from building a nesting
/// so deep that dropping it would overflow the stack.
const MAX_DEPTH: usize = 8;

/// Byte strings: slices of the file (no copy), or built by `_codecs.encode`.
#[derive(Debug, Clone)]
pub(crate) enum Bytes<'a> {
    File(&'a [u8]),
    Built(Rc<[u8]>),
}

impl std::ops::Deref for Bytes<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::File(b) => b,
            Bytes::Built(b) => b,
        }
    }
}

/// The callables a CIFAR pickle may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Global {
    /// `numpy.core.multiarray._reconstruct` (`numpy._core` since numpy 2).
    Reconstruct,
    /// `numpy.ndarray`, the class `_reconstruct` builds.
    Ndarray,
    /// `numpy.dtype`.
    Dtype,
    /// `_codecs.encode`: Python 3 pickles `bytes` under protocol 2 as `encode(text, "latin1")`.
    Encode,
}

/// A numpy array: shape, type string (`u1` for `uint8`), memory order and raw bytes.
#[derive(Debug)]
pub(crate) struct Array<'a> {
    pub shape: Vec<usize>,
    pub dtype: Rc<str>,
    pub fortran: bool,
    pub data: Bytes<'a>,
}

/// A value on the pickle machine's stack.
#[derive(Debug, Clone)]
pub(crate) enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    /// Python 2 `str` or Python 3 `bytes`.
    Bytes(Bytes<'a>),
    /// Python 3 `str` (Python 2 `unicode`).
    Text(Rc<str>),
    /// A tuple and its nesting depth (tuples are shared through the memo, so it is kept).
    Tuple(Rc<[Value<'a>]>, usize),
    List(Vec<Value<'a>>),
    Dict(Vec<(Value<'a>, Value<'a>)>),
    Global(Global),
    /// A numpy dtype, by its type string.
    Dtype(Rc<str>),
    /// What `_reconstruct` returns: an array still waiting for its state (`BUILD`).
    EmptyArray,
    Array(Rc<Array<'a>>),
    /// What the memo keeps of a list or dict: appends made after memoizing it would not show in a
    /// copy, and CIFAR's files never refer back to one, so fetching it is refused.
    Mutable,
}

impl<'a> Value<'a> {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Bytes(_) => "a byte string",
            Value::Text(_) => "a text string",
            Value::Tuple(..) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a global",
            Value::Dtype(_) => "a numpy dtype",
            Value::EmptyArray | Value::Array(_) => "a numpy array",
            Value::Mutable => "a list or dict",
        }
    }

    /// How deeply containers nest inside this value (0 for a scalar).
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(_, d) => *d,
            Value::List(items) => 1 + items.iter().map(Value::depth).max().unwrap_or(0),
            Value::Dict(items) => 1 + items.iter().map(|(k, v)| k.depth().max(v.depth())).max().unwrap_or(0),
            _ => 0,
        }
    }

    /// The characters of a byte string (latin-1, as torchvision decodes them) or text string.
    pub fn text(&self) -> Option<String> {
        match self {
            Value::Bytes(b) => Some(b.iter().map(|&c| char::from(c)).collect()),
            Value::Text(t) => Some(t.to_string()),
            _ => None,
        }
    }

    /// The value under `key` in a dict, whether its keys are byte strings (Python 2, or Python 3
    /// with `encoding="bytes"`) or text.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        let Value::Dict(items) = self else { return None };
        items.iter().find_map(|(k, v)| {
            let hit = match k {
                Value::Bytes(b) => &b[..] == key.as_bytes(),
                Value::Text(t) => &**t == key,
                _ => false,
            };
            hit.then_some(v)
        })
    }
}

/// Parse a whole pickle. The error says what is wrong and at which byte.
pub(crate) fn parse(input: &[u8]) -> std::result::Result<Value<'_>, String> {
    Machine { input, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }.run()
}

struct Machine<'a> {
    input: &'a [u8],
    pos: usize,
    stack: Vec<Value<'a>>,
    /// Stack heights at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value<'a>>,
}

fn describe_op(op: u8) -> String {
    if op.is_ascii_graphic() {
        format!("0x{op:02x} ('{}')", op as char)
    } else {
        format!("0x{op:02x}")
    }
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize, what: &str) -> std::result::Result<&'a [u8], String> {
        let input: &'a [u8] = self.input;
        let rest = input.len() - self.pos;
        if n > rest {
            return Err(format!(
                "the file ends at byte {} inside {what}, which needs {n} more bytes: the file is truncated",
                input.len()
            ));
        }
        let out = &input[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> std::result::Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> std::result::Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> std::result::Result<u32, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &str) -> std::result::Result<u64, String> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    }

    /// A length field: it must fit in what remains of the file.
    fn sized(&mut self, n: u64, what: &str) -> std::result::Result<&'a [u8], String> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        self.take(n, what)
    }

    fn utf8(&mut self, n: u64, what: &str) -> std::result::Result<Value<'a>, String> {
        let at = self.pos;
        let b = self.sized(n, what)?;
        let s = std::str::from_utf8(b).map_err(|_| format!("{what} at byte {at} is not UTF-8"))?;
        Ok(Value::Text(s.into()))
    }

    /// A newline-terminated name (GLOBAL's module and attribute).
    fn line(&mut self) -> std::result::Result<&'a str, String> {
        let input: &'a [u8] = self.input;
        let rest = &input[self.pos..];
        let end =
            rest.iter().take(256).position(|&b| b == b'\n').ok_or_else(|| {
                format!("GLOBAL at byte {} has no newline-terminated name within 256 bytes", self.pos)
            })?;
        let name =
            std::str::from_utf8(&rest[..end]).map_err(|_| format!("GLOBAL name at byte {} is not UTF-8", self.pos))?;
        self.pos += end + 1;
        Ok(name)
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, at: usize) -> std::result::Result<Value<'a>, String> {
        if self.stack.len() <= self.floor() {
            return Err(format!("opcode at byte {at} needs a value but the stack is empty"));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn pop_mark(&mut self, at: usize) -> std::result::Result<Vec<Value<'a>>, String> {
        let mark = self.marks.pop().ok_or_else(|| format!("opcode at byte {at} needs a MARK and none is open"))?;
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self, at: usize) -> std::result::Result<&mut Value<'a>, String> {
        if self.stack.len() <= self.floor() {
            return Err(format!("opcode at byte {at} needs a container but the stack is empty"));
        }
        Ok(self.stack.last_mut().expect("checked above"))
    }

    /// The deepest nesting of `items` once inside a container, refused beyond [`MAX_DEPTH`].
    fn nest(items: &[Value<'a>], at: usize) -> std::result::Result<usize, String> {
        let depth = 1 + items.iter().map(Value::depth).max().unwrap_or(0);
        if depth > MAX_DEPTH {
            return Err(format!(
                "containers nested deeper than {MAX_DEPTH} at byte {at}: CIFAR's pickles nest three deep"
            ));
        }
        Ok(depth)
    }

    fn tuple(items: Vec<Value<'a>>, at: usize) -> std::result::Result<Value<'a>, String> {
        let depth = Self::nest(&items, at)?;
        Ok(Value::Tuple(items.into(), depth))
    }

    fn append(&mut self, at: usize, items: Vec<Value<'a>>) -> std::result::Result<(), String> {
        Self::nest(&items, at)?;
        match self.top(at)? {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            other => Err(format!("APPEND at byte {at} to {}, expected a list", other.kind())),
        }
    }

    fn set_items(&mut self, at: usize, items: Vec<Value<'a>>) -> std::result::Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!("SETITEMS at byte {at} has an odd number of keys and values"));
        }
        Self::nest(&items, at)?;
        match self.top(at)? {
            Value::Dict(dict) => {
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    dict.push((k, v));
                }
                Ok(())
            }
            other => Err(format!("SETITEM at byte {at} to {}, expected a dict", other.kind())),
        }
    }

    fn put(&mut self, index: u32, at: usize) -> std::result::Result<(), String> {
        if self.stack.len() <= self.floor() {
            return Err(format!("PUT at byte {at} with an empty stack"));
        }
        let v = match self.stack.last().expect("checked above") {
            Value::List(_) | Value::Dict(_) => Value::Mutable,
            v => v.clone(),
        };
        self.memo.insert(index, v);
        Ok(())
    }

    fn get(&mut self, index: u32, at: usize) -> std::result::Result<(), String> {
        match self.memo.get(&index) {
            None => Err(format!("GET at byte {at} of memo entry {index}, which was never stored")),
            Some(Value::Mutable) => {
                Err(format!("GET at byte {at} refers back to a list or dict, which CIFAR's pickles never do"))
            }
            Some(v) => {
                self.stack.push(v.clone());
                Ok(())
            }
        }
    }

    fn global(module: &str, name: &str, at: usize) -> std::result::Result<Value<'a>, String> {
        let g = match (module, name) {
            ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => Global::Reconstruct,
            ("numpy", "ndarray") => Global::Ndarray,
            ("numpy", "dtype") => Global::Dtype,
            ("_codecs", "encode") => Global::Encode,
            _ => {
                return Err(format!(
                    "global `{module}.{name}` at byte {at}: a CIFAR pickle names only numpy's \
                     _reconstruct, ndarray and dtype (and _codecs.encode)"
                ))
            }
        };
        Ok(Value::Global(g))
    }

    fn reduce(f: Value<'a>, args: Value<'a>, at: usize) -> std::result::Result<Value<'a>, String> {
        let Value::Tuple(args, _) = args else {
            return Err(format!("REDUCE at byte {at} with {} as arguments, expected a tuple", args.kind()));
        };
        match (f, &args[..]) {
            (Value::Global(Global::Reconstruct), [Value::Global(Global::Ndarray), _, _]) => Ok(Value::EmptyArray),
            (Value::Global(Global::Reconstruct), _) => {
                Err(format!("REDUCE at byte {at}: _reconstruct of something other than numpy.ndarray"))
            }
            (Value::Global(Global::Dtype), [ty, _, _]) => match ty.text() {
                Some(t) => Ok(Value::Dtype(t.into())),
                None => Err(format!("REDUCE at byte {at}: numpy.dtype of {}, expected a type string", ty.kind())),
            },
            (Value::Global(Global::Encode), [Value::Text(t), Value::Text(enc)])
                if matches!(&**enc, "latin1" | "latin-1") =>
            {
                let bytes: Option<Vec<u8>> = t.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                let bytes =
                    bytes.ok_or_else(|| format!("REDUCE at byte {at}: _codecs.encode of text beyond latin-1"))?;
                Ok(Value::Bytes(Bytes::Built(bytes.into())))
            }
            (Value::Global(g), _) => Err(format!("REDUCE at byte {at}: unexpected arguments for {g:?}")),
            (f, _) => Err(format!("REDUCE at byte {at} calls {}, expected a global", f.kind())),
        }
    }

    fn build(obj: Value<'a>, state: Value<'a>, at: usize) -> std::result::Result<Value<'a>, String> {
        match (obj, state) {
            // A dtype's state is its byte order and field layout; a one-byte type has neither.
            (Value::Dtype(t), Value::Tuple(..)) => Ok(Value::Dtype(t)),
            (Value::EmptyArray, Value::Tuple(state, _)) => {
                // numpy writes (version, shape, dtype, is_fortran, data); very old numpy omits the version.
                let fields = match &state[..] {
                    [Value::Int(1), rest @ ..] if rest.len() == 4 => rest,
                    rest if rest.len() == 4 => rest,
                    _ => return Err(format!("BUILD at byte {at}: an ndarray state of {} fields", state.len())),
                };
                let Value::Tuple(dims, _) = &fields[0] else {
                    return Err(format!("BUILD at byte {at}: an ndarray shape that is {}", fields[0].kind()));
                };
                let shape = dims
                    .iter()
                    .map(|d| match d {
                        Value::Int(n) => usize::try_from(*n).ok(),
                        _ => None,
                    })
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| format!("BUILD at byte {at}: an ndarray shape that is not all sizes"))?;
                let Value::Dtype(dtype) = &fields[1] else {
                    return Err(format!("BUILD at byte {at}: an ndarray whose dtype is {}", fields[1].kind()));
                };
                let fortran = match fields[2] {
                    Value::Bool(b) => b,
                    Value::Int(i) => i != 0,
                    ref other => {
                        return Err(format!("BUILD at byte {at}: an ndarray order flag that is {}", other.kind()))
                    }
                };
                let Value::Bytes(data) = &fields[3] else {
                    return Err(format!(
                        "BUILD at byte {at}: ndarray data that is {}, expected raw bytes (an object array?)",
                        fields[3].kind()
                    ));
                };
                Ok(Value::Array(Rc::new(Array { shape, dtype: dtype.clone(), fortran, data: data.clone() })))
            }
            (obj, state) => Err(format!("BUILD at byte {at} on {} with {}", obj.kind(), state.kind())),
        }
    }

    fn run(mut self) -> std::result::Result<Value<'a>, String> {
        if self.input.first() != Some(&0x80) {
            return Err(
                "the file does not start with a pickle PROTO opcode (0x80): not a pickle of protocol 2 or later".into(),
            );
        }
        loop {
            let at = self.pos;
            if at == self.input.len() {
                return Err(format!("the file ends at byte {at} before the pickle's STOP: the file is truncated"));
            }
            let op = self.u8("an opcode")?;
            match op {
                0x80 => {
                    let p = self.u8("PROTO")?;
                    if !PROTOCOLS.contains(&p) {
                        return Err(format!(
                            "pickle protocol {p} at byte {at}: expected 2 (as CIFAR's files are written), 3 or 4"
                        ));
                    }
                }
                // FRAME: the byte length of the opcodes that follow, only a hint for buffering.
                0x95 => {
                    self.take(8, "FRAME")?;
                }
                b'.' => {
                    let v = self.pop(at)?;
                    if !self.stack.is_empty() || !self.marks.is_empty() {
                        return Err(format!("STOP at byte {at} leaves values or an open MARK behind"));
                    }
                    if self.pos != self.input.len() {
                        return Err(format!(
                            "{} bytes follow the pickle's STOP at byte {at}",
                            self.input.len() - self.pos
                        ));
                    }
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Rc::from(Vec::new()), 1)),
                b't' => {
                    let items = self.pop_mark(at)?;
                    let t = Self::tuple(items, at)?;
                    self.stack.push(t);
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(at)?);
                    }
                    items.reverse();
                    let t = Self::tuple(items, at)?;
                    self.stack.push(t);
                }
                b'a' => {
                    let v = self.pop(at)?;
                    self.append(at, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark(at)?;
                    self.append(at, items)?;
                }
                b's' => {
                    let v = self.pop(at)?;
                    let k = self.pop(at)?;
                    self.set_items(at, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark(at)?;
                    self.set_items(at, items)?;
                }
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'K' => {
                    let v = self.u8("BININT1")?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16("BININT2")?;
                    self.stack.push(Value::Int(v.into()));
                }
                b'J' => {
                    let v = self.u32("BININT")? as i32;
                    self.stack.push(Value::Int(v.into()));
                }
                // SHORT_BINSTRING, SHORT_BINBYTES; BINSTRING, BINBYTES; BINBYTES8.
                b'U' | b'C' => {
                    let n = self.u8("a short string's length")?;
                    let b = self.sized(n.into(), "a short byte string")?;
                    self.stack.push(Value::Bytes(Bytes::File(b)));
                }
                b'T' | b'B' => {
                    let n = self.u32("a string's length")?;
                    if op == b'T' && n > i32::MAX as u32 {
                        return Err(format!("BINSTRING at byte {at} has a negative length"));
                    }
                    let b = self.sized(n.into(), "a byte string")?;
                    self.stack.push(Value::Bytes(Bytes::File(b)));
                }
                0x8e => {
                    let n = self.u64("BINBYTES8's length")?;
                    let b = self.sized(n, "a byte string")?;
                    self.stack.push(Value::Bytes(Bytes::File(b)));
                }
                // SHORT_BINUNICODE, BINUNICODE, BINUNICODE8.
                0x8c => {
                    let n = self.u8("a short text's length")?;
                    let v = self.utf8(n.into(), "a text string")?;
                    self.stack.push(v);
                }
                b'X' => {
                    let n = self.u32("a text's length")?;
                    let v = self.utf8(n.into(), "a text string")?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.u64("a text's length")?;
                    let v = self.utf8(n, "a text string")?;
                    self.stack.push(v);
                }
                b'q' => {
                    let i = self.u8("BINPUT")?;
                    self.put(i.into(), at)?;
                }
                b'r' => {
                    let i = self.u32("LONG_BINPUT")?;
                    self.put(i, at)?;
                }
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| format!("MEMOIZE at byte {at}: memo full"))?;
                    self.put(i, at)?;
                }
                b'h' => {
                    let i = self.u8("BINGET")?;
                    self.get(i.into(), at)?;
                }
                b'j' => {
                    let i = self.u32("LONG_BINGET")?;
                    self.get(i, at)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let g = Self::global(module, name, at)?;
                    self.stack.push(g);
                }
                0x93 => {
                    let name = self.pop(at)?;
                    let module = self.pop(at)?;
                    let (Value::Text(module), Value::Text(name)) = (module, name) else {
                        return Err(format!("STACK_GLOBAL at byte {at} without two text names"));
                    };
                    let g = Self::global(&module, &name, at)?;
                    self.stack.push(g);
                }
                b'R' => {
                    let args = self.pop(at)?;
                    let f = self.pop(at)?;
                    let v = Self::reduce(f, args, at)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let state = self.pop(at)?;
                    let obj = self.pop(at)?;
                    let v = Self::build(obj, state, at)?;
                    self.stack.push(v);
                }
                other => {
                    return Err(format!(
                        "opcode {} at byte {at}, which CIFAR's pickles do not use (the file is corrupt, \
                         or not the python version of CIFAR)",
                        describe_op(other)
                    ))
                }
            }
        }
    }
}

/// What one pickled batch file must hold.
pub(crate) struct BatchSpec<'a> {
    pub dataset: &'static str,
    pub images: usize,
    /// Bytes per image (3 × 32 × 32 for CIFAR).
    pub image_len: usize,
    /// Each label list's key and its number of classes, e.g. `("labels", 10)`.
    pub labels: &'a [(&'static str, usize)],
    pub hint: &'a str,
}

/// One batch's pixels (`images × image_len` bytes) and its label lists, in `BatchSpec::labels` order.
#[derive(Debug)]
pub(crate) struct Batch {
    pub pixels: Vec<u8>,
    pub labels: Vec<Vec<u8>>,
}

/// The file's bytes, after checking it exists and its size lies in `min..=max`.
fn read_bounded(dataset: &'static str, path: &Path, min: u64, max: u64, holds: &str, hint: &str) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|_| Error::Missing {
        dataset,
        path: path.to_path_buf(),
        expected: holds.to_string(),
        hint: hint.to_string(),
    })?;
    let bad = |what: String| Error::Pickle { dataset, path: path.to_path_buf(), what, hint: hint.to_string() };
    if meta.len() < min {
        return Err(bad(format!("{} bytes, fewer than {min} for {holds}: the file is truncated", meta.len())));
    }
    if meta.len() > max {
        return Err(bad(format!("{} bytes, more than the {max} that {holds} can take", meta.len())));
    }
    std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

impl BatchSpec<'_> {
    fn error(&self, path: &Path, what: String) -> Error {
        Error::Pickle { dataset: self.dataset, path: path.to_path_buf(), what, hint: self.hint.to_string() }
    }

    fn holds(&self) -> String {
        format!("a pickled batch of {} images of {} bytes (CIFAR's python version)", self.images, self.image_len)
    }

    /// Read and check one batch file.
    pub fn read(&self, path: &Path) -> Result<Batch> {
        let pixels = (self.images * self.image_len) as u64;
        // Beyond the pixels a batch holds its labels, file names and a few hundred bytes of
        // structure: well under 256 bytes per image. Python 3's protocol 2 stores the pixels as
        // UTF-8 text (`_codecs.encode`), up to two bytes each.
        let max = 2 * pixels + 256 * self.images as u64 + (1 << 16);
        let bytes = read_bounded(self.dataset, path, pixels, max, &self.holds(), self.hint)?;
        self.decode(path, &bytes)
    }

    /// Check one batch's pickle bytes (`path` names it in errors).
    pub fn decode(&self, path: &Path, bytes: &[u8]) -> Result<Batch> {
        let err = |what: String| self.error(path, what);
        let top = parse(bytes).map_err(&err)?;
        if !matches!(top, Value::Dict(_)) {
            return Err(err(format!("the pickle holds {}, expected a dict with `data` and labels", top.kind())));
        }
        let data = top.get("data").ok_or_else(|| err("the dict has no `data` key".into()))?;
        let Value::Array(a) = data else {
            return Err(err(format!("`data` is {}, expected a numpy uint8 array", data.kind())));
        };
        if !matches!(&*a.dtype, "u1" | "|u1") {
            return Err(err(format!("`data` has dtype `{}`, expected uint8 (`u1`)", a.dtype)));
        }
        if a.shape != [self.images, self.image_len] {
            let dims: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
            return Err(err(format!(
                "`data` has shape ({}), expected ({}, {}): {} images of {} bytes",
                dims.join(", "),
                self.images,
                self.image_len,
                self.images,
                self.image_len
            )));
        }
        if a.fortran {
            return Err(err("`data` is in Fortran (column-major) order, expected one image per row".into()));
        }
        if a.data.len() != self.images * self.image_len {
            return Err(err(format!(
                "`data` holds {} bytes for shape ({}, {}), expected {}",
                a.data.len(),
                self.images,
                self.image_len,
                self.images * self.image_len
            )));
        }
        let mut labels = Vec::with_capacity(self.labels.len());
        for &(key, classes) in self.labels {
            let list = top.get(key).ok_or_else(|| err(format!("the dict has no `{key}` key")))?;
            let Value::List(items) = list else {
                return Err(err(format!("`{key}` is {}, expected a list of {} ints", list.kind(), self.images)));
            };
            if items.len() != self.images {
                return Err(err(format!(
                    "`{key}` has {} entries, expected {} (one per image)",
                    items.len(),
                    self.images
                )));
            }
            let mut out = Vec::with_capacity(items.len());
            for (record, item) in items.iter().enumerate() {
                match item {
                    Value::Int(v) if (0..classes as i64).contains(v) => out.push(*v as u8),
                    Value::Int(v) => {
                        return Err(err(format!("record {record} has {key} {v}, expected 0..{classes}")));
                    }
                    other => return Err(err(format!("`{key}`[{record}] is {}, expected an int", other.kind()))),
                }
            }
            labels.push(out);
        }
        Ok(Batch { pixels: a.data.to_vec(), labels })
    }
}

/// Read lists of names from a pickled meta file: for each `(key, count)`, exactly `count` strings.
pub(crate) fn read_names(
    dataset: &'static str,
    path: &Path,
    keys: &[(&str, usize)],
    hint: &str,
) -> Result<Vec<Vec<String>>> {
    let wanted: Vec<String> = keys.iter().map(|(k, n)| format!("`{k}` ({n} names)")).collect();
    let holds = format!("a pickled dict with {}", wanted.join(" and "));
    let bytes = read_bounded(dataset, path, 2, 1 << 20, &holds, hint)?;
    let err = |what: String| Error::Pickle { dataset, path: path.to_path_buf(), what, hint: hint.to_string() };
    let top = parse(&bytes).map_err(&err)?;
    let mut out = Vec::with_capacity(keys.len());
    for &(key, count) in keys {
        let names = top.get(key).ok_or_else(|| err(format!("no `{key}` key, expected {holds}")))?;
        let Value::List(items) = names else {
            return Err(err(format!("`{key}` is {}, expected a list of {count} names", names.kind())));
        };
        if items.len() != count {
            return Err(err(format!("`{key}` has {} names, expected {count}", items.len())));
        }
        let names = items
            .iter()
            .map(|v| v.text().ok_or_else(|| err(format!("`{key}` holds {}, expected strings", v.kind()))))
            .collect::<Result<Vec<String>>>()?;
        out.push(names);
    }
    Ok(out)
}

/// Writes pickles exactly as Python 2's cPickle (protocol 2) wrote CIFAR's python version, so
/// tests can build such files from any pixels without Python. The committed fixtures, written by
/// Python 2.7 with numpy 1.16, pin the format byte for byte.
#[cfg(test)]
pub(crate) mod py2 {
    /// A dict value.
    pub enum Item<'a> {
        /// A numpy array of type string `dtype` and `shape` over `data`.
        Array {
            dtype: &'a str,
            shape: &'a [usize],
            data: &'a [u8],
        },
        Int(i64),
        Ints(&'a [i64]),
        Str(&'a str),
        Strs(&'a [String]),
    }

    /// Python 2's `str`: cPickle memoizes a string of 2 or more characters held by a container
    /// (its reference count is above 1), never a temporary such as the array's raw bytes.
    struct W {
        out: Vec<u8>,
        memo: u32,
    }

    impl W {
        fn put(&mut self) {
            self.memo += 1;
            if self.memo < 256 {
                self.out.extend([b'q', self.memo as u8]);
            } else {
                self.out.push(b'r');
                self.out.extend(self.memo.to_le_bytes());
            }
        }

        fn int(&mut self, v: i64) {
            match v {
                0..=255 => self.out.extend([b'K', v as u8]),
                256..=65535 => {
                    self.out.push(b'M');
                    self.out.extend((v as u16).to_le_bytes());
                }
                _ => {
                    self.out.push(b'J');
                    self.out.extend(i32::try_from(v).expect("BININT range").to_le_bytes());
                }
            }
        }

        fn bytes(&mut self, b: &[u8], held: bool) {
            if b.len() < 256 {
                self.out.extend([b'U', b.len() as u8]);
            } else {
                self.out.push(b'T');
                self.out.extend((b.len() as u32).to_le_bytes());
            }
            self.out.extend(b);
            if held && b.len() >= 2 {
                self.put();
            }
        }

        fn global(&mut self, module: &str, name: &str) {
            self.out.push(b'c');
            self.out.extend(format!("{module}\n{name}\n").bytes());
            self.put();
        }

        /// EMPTY_LIST, then batches of 1,000: MARK … APPENDS, or a lone item and APPEND.
        fn list<T>(&mut self, items: &[T], mut save: impl FnMut(&mut W, &T)) {
            self.out.push(b']');
            self.put();
            for chunk in items.chunks(1000) {
                if chunk.len() == 1 {
                    save(self, &chunk[0]);
                    self.out.push(b'a');
                } else {
                    self.out.push(b'(');
                    for item in chunk {
                        save(self, item);
                    }
                    self.out.push(b'e');
                }
            }
        }

        fn item(&mut self, item: &Item) {
            match item {
                Item::Array { dtype, shape, data } => {
                    self.global("numpy.core.multiarray", "_reconstruct");
                    self.global("numpy", "ndarray");
                    self.out.extend([b'K', 0, 0x85]);
                    self.bytes(b"b", false);
                    self.out.extend([0x87, b'R']);
                    self.put();
                    self.out.push(b'(');
                    self.int(1);
                    if shape.len() > 3 {
                        self.out.push(b'(');
                    }
                    for &d in shape.iter() {
                        self.int(d as i64);
                    }
                    self.out.push(match shape.len() {
                        0 => b')',
                        n @ 1..=3 => 0x84 + n as u8,
                        _ => b't',
                    });
                    self.global("numpy", "dtype");
                    self.bytes(dtype.as_bytes(), false);
                    self.out.extend([b'K', 0, b'K', 1, 0x87, b'R']);
                    self.put();
                    self.out.extend([b'(', b'K', 3]);
                    self.bytes(b"|", false);
                    self.out.extend(b"NNN");
                    self.int(-1);
                    self.int(-1);
                    self.out.extend([b'K', 0, b't', b'b', 0x89]);
                    self.bytes(data, false);
                    self.out.extend([b't', b'b']);
                }
                Item::Int(v) => self.int(*v),
                Item::Ints(v) => self.list(v, |w, &i| w.int(i)),
                Item::Str(s) => self.bytes(s.as_bytes(), true),
                Item::Strs(v) => self.list(v, |w, s| w.bytes(s.as_bytes(), true)),
            }
        }
    }

    /// A pickled dict of `entries`, in the order given (Python 2 wrote them in hash order:
    /// `data`, `labels`, `batch_label`, `filenames` for CIFAR-10's batches).
    pub fn dict(entries: &[(&str, Item)]) -> Vec<u8> {
        let mut w = W { out: vec![0x80, 2, b'}'], memo: 0 };
        w.put();
        if entries.len() > 1 {
            w.out.push(b'(');
        }
        for (k, v) in entries {
            w.bytes(k.as_bytes(), true);
            w.item(v);
        }
        w.out.push(if entries.len() > 1 { b'u' } else { b's' });
        w.out.push(b'.');
        w.out
    }

    /// The dict of one CIFAR-10 batch as the official files hold it.
    pub fn cifar10_batch(data: &[u8], labels: &[u8], batch_label: &str) -> Vec<u8> {
        let n = labels.len();
        let labels: Vec<i64> = labels.iter().map(|&l| l.into()).collect();
        let names: Vec<String> = (0..n).map(|i| format!("image_{i:06}.png")).collect();
        dict(&[
            ("data", Item::Array { dtype: "u1", shape: &[n, data.len() / n.max(1)], data }),
            ("labels", Item::Ints(&labels)),
            ("batch_label", Item::Str(batch_label)),
            ("filenames", Item::Strs(&names)),
        ])
    }

    /// The dict of one CIFAR-100 file as the official files hold it.
    pub fn cifar100_batch(data: &[u8], fine: &[u8], coarse: &[u8], batch_label: &str) -> Vec<u8> {
        let n = fine.len();
        let fine: Vec<i64> = fine.iter().map(|&l| l.into()).collect();
        let coarse: Vec<i64> = coarse.iter().map(|&l| l.into()).collect();
        let names: Vec<String> = (0..n).map(|i| format!("image_{i:06}.png")).collect();
        dict(&[
            ("data", Item::Array { dtype: "u1", shape: &[n, data.len() / n.max(1)], data }),
            ("batch_label", Item::Str(batch_label)),
            ("fine_labels", Item::Ints(&fine)),
            ("coarse_labels", Item::Ints(&coarse)),
            ("filenames", Item::Strs(&names)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::py2::{dict, Item};
    use super::*;

    const CIFAR10_PY2: &[u8] = include_bytes!("../tests/fixtures/cifar10_py2.pkl");
    const CIFAR100_PY2: &[u8] = include_bytes!("../tests/fixtures/cifar100_py2.pkl");
    const META_PY2: &[u8] = include_bytes!("../tests/fixtures/meta_py2.pkl");
    const CIFAR10_PY3_P2: &[u8] = include_bytes!("../tests/fixtures/cifar10_py3_p2.pkl");
    const CIFAR10_PY3_P4: &[u8] = include_bytes!("../tests/fixtures/cifar10_py3_p4.pkl");
    /// The fixtures' two 6-byte images.
    const PIXELS: [u8; 12] = [0, 1, 127, 128, 254, 255, 10, 20, 30, 200, 210, 220];

    fn spec<'a>(images: usize, image_len: usize, labels: &'a [(&'static str, usize)]) -> BatchSpec<'a> {
        BatchSpec { dataset: "cifar10", images, image_len, labels, hint: "the hint" }
    }

    fn decode_err(spec: &BatchSpec, bytes: &[u8]) -> String {
        match spec.decode(Path::new("dir/test_batch"), bytes) {
            Ok(_) => panic!("decoded"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn python2_and_python3_pickles_decode_to_the_same_batch() {
        for bytes in [CIFAR10_PY2, CIFAR10_PY3_P2, CIFAR10_PY3_P4] {
            let b = spec(2, 6, &[("labels", 10)]).decode(Path::new("f"), bytes).unwrap();
            assert_eq!(b.pixels, PIXELS);
            assert_eq!(b.labels, vec![vec![3, 7]]);
            let top = parse(bytes).unwrap();
            assert_eq!(top.get("batch_label").unwrap().text().unwrap(), "testing batch 1 of 1");
        }
        let b =
            spec(1, 6, &[("fine_labels", 100), ("coarse_labels", 20)]).decode(Path::new("f"), CIFAR100_PY2).unwrap();
        assert_eq!((b.pixels.as_slice(), b.labels), (&PIXELS[..6], vec![vec![42], vec![3]]));
        let meta = parse(META_PY2).unwrap();
        assert!(matches!(meta.get("num_cases_per_batch"), Some(Value::Int(10_000))));
        let Some(Value::List(names)) = meta.get("label_names") else { panic!("{meta:?}") };
        assert_eq!(names[1].text().unwrap(), "automobile");
    }

    #[test]
    fn the_test_writer_reproduces_python2_cpickle_byte_for_byte() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (ab, c) = (names(&["a_1.png", "b_2.png"]), names(&["c_3.png"]));
        let cifar10 = dict(&[
            ("data", Item::Array { dtype: "u1", shape: &[2, 6], data: &PIXELS }),
            ("labels", Item::Ints(&[3, 7])),
            ("batch_label", Item::Str("testing batch 1 of 1")),
            ("filenames", Item::Strs(&ab)),
        ]);
        assert_eq!(cifar10, CIFAR10_PY2);
        let cifar100 = dict(&[
            ("data", Item::Array { dtype: "u1", shape: &[1, 6], data: &PIXELS[..6] }),
            ("batch_label", Item::Str("testing batch 1 of 1")),
            ("fine_labels", Item::Ints(&[42])),
            ("coarse_labels", Item::Ints(&[3])),
            ("filenames", Item::Strs(&c)),
        ]);
        assert_eq!(cifar100, CIFAR100_PY2);
        let meta = dict(&[
            ("num_cases_per_batch", Item::Int(10_000)),
            ("label_names", Item::Strs(&names(&["airplane", "automobile", "bird"]))),
            ("num_vis", Item::Int(3072)),
        ]);
        assert_eq!(meta, META_PY2);
    }

    #[test]
    fn a_full_size_batch_uses_long_memo_indices_and_batched_appends() {
        let pixels: Vec<u8> = (0..1200 * 3072).map(|i| (i % 253) as u8).collect();
        let labels: Vec<u8> = (0..1200).map(|i| (i % 10) as u8).collect();
        let bytes = py2::cifar10_batch(&pixels, &labels, "training batch 1 of 5");
        // 1,200 file names push the memo past 255 (LONG_BINPUT) and the lists past one batch.
        assert!(bytes.windows(5).any(|w| w == [b'r', 0, 1, 0, 0]));
        let b = spec(1200, 3072, &[("labels", 10)]).decode(Path::new("f"), &bytes).unwrap();
        assert_eq!((b.pixels, b.labels), (pixels, vec![labels]));
    }

    #[test]
    fn every_truncation_and_every_single_byte_corruption_is_an_error_not_a_panic() {
        let s = spec(2, 6, &[("labels", 10)]);
        for cut in 0..CIFAR10_PY2.len() {
            let err = decode_err(&s, &CIFAR10_PY2[..cut]);
            assert!(err.contains("dir/test_batch") && err.contains("the hint"), "{err}");
        }
        assert!(decode_err(&s, &CIFAR10_PY2[..200]).contains("truncated"));
        for bytes in [CIFAR10_PY2, CIFAR10_PY3_P2, CIFAR10_PY3_P4] {
            for i in 0..bytes.len() {
                for v in [0x00, 0x01, 0x7f, 0x80, 0xff, b'(', b'e', b'h', b'R', b'b', b'.'] {
                    let mut bad = bytes.to_vec();
                    bad[i] = v;
                    // Some changes still decode (a different pixel or label); none may panic.
                    let _ = s.decode(Path::new("f"), &bad);
                }
            }
        }
    }

    #[test]
    fn wrong_shape_dtype_and_label_count_name_what_was_expected() {
        let batch = |dtype: &str, shape: &[usize], data: &[u8], labels: &[i64]| {
            let names = vec!["a".to_string(); labels.len()];
            dict(&[
                ("data", Item::Array { dtype, shape, data }),
                ("labels", Item::Ints(labels)),
                ("filenames", Item::Strs(&names)),
            ])
        };
        let s = spec(2, 6, &[("labels", 10)]);
        assert!(s.decode(Path::new("f"), &batch("u1", &[2, 6], &PIXELS, &[1, 2])).is_ok());
        let err = decode_err(&s, &batch("u1", &[3, 4], &PIXELS, &[1, 2]));
        assert!(err.contains("shape (3, 4), expected (2, 6)"), "{err}");
        let err = decode_err(&s, &batch("u1", &[2, 3, 2], &PIXELS, &[1, 2]));
        assert!(err.contains("shape (2, 3, 2), expected (2, 6)"), "{err}");
        let err = decode_err(&s, &batch("u1", &[2, 6], &PIXELS[..11], &[1, 2]));
        assert!(err.contains("holds 11 bytes") && err.contains("expected 12"), "{err}");
        let err = decode_err(&s, &batch("i8", &[2, 6], &PIXELS, &[1, 2]));
        assert!(err.contains("dtype `i8`, expected uint8"), "{err}");
        let err = decode_err(&s, &batch("u1", &[2, 6], &PIXELS, &[1]));
        assert!(err.contains("`labels` has 1 entries, expected 2 (one per image)"), "{err}");
        let err = decode_err(&s, &batch("u1", &[2, 6], &PIXELS, &[1, 10]));
        assert!(err.contains("record 1 has labels 10, expected 0..10"), "{err}");
        let err = decode_err(&s, &batch("u1", &[2, 6], &PIXELS, &[-1, 2]));
        assert!(err.contains("record 0 has labels -1"), "{err}");
        let err = decode_err(&spec(2, 6, &[("fine_labels", 100)]), &batch("u1", &[2, 6], &PIXELS, &[1, 2]));
        assert!(err.contains("no `fine_labels` key"), "{err}");
        let no_data = dict(&[("labels", Item::Ints(&[1, 2]))]);
        assert!(decode_err(&s, &no_data).contains("no `data` key"));
    }

    #[test]
    fn unknown_opcodes_globals_and_protocols_are_refused_by_name() {
        let s = spec(2, 6, &[("labels", 10)]);
        // Protocol 0 (text) pickles start with an opcode, not PROTO.
        let err = decode_err(&s, b"(dp0\n.");
        assert!(err.contains("not a pickle of protocol 2 or later"), "{err}");
        let err = decode_err(&s, b"\x80\x05}.");
        assert!(err.contains("pickle protocol 5"), "{err}");
        // A float (BINFLOAT) where an int belongs.
        let err = decode_err(&s, b"\x80\x02G\x3f\xf0\x00\x00\x00\x00\x00\x00.");
        assert!(err.contains("opcode 0x47 ('G') at byte 2"), "{err}");
        let err = decode_err(&s, b"\x80\x02cos\nsystem\n.");
        assert!(err.contains("global `os.system` at byte 2"), "{err}");
        let err = decode_err(&s, b"\x80\x02}q\x01h\x01.");
        assert!(err.contains("refers back to a list or dict"), "{err}");
        let mut trailing = CIFAR10_PY2.to_vec();
        trailing.push(0);
        assert!(decode_err(&s, &trailing).contains("1 bytes follow the pickle's STOP"));
        let mut deep = b"\x80\x02)".to_vec();
        deep.extend([0x85; 1_000_000]);
        deep.push(b'.');
        assert!(decode_err(&s, &deep).contains("nested deeper than 8 at byte 10"));
        let err = decode_err(&s, b"\x80\x02]q\x01.");
        assert!(err.contains("holds a list, expected a dict"), "{err}");
    }

    #[test]
    fn files_are_bounded_by_the_expected_size_before_reading() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("test_batch");
        let s = spec(2, 3072, &[("labels", 10)]);
        let err = s.read(&path).unwrap_err().to_string();
        assert!(err.contains("missing") && err.contains("a pickled batch of 2 images of 3072 bytes"), "{err}");
        std::fs::write(&path, vec![0u8; 100]).unwrap();
        let err = s.read(&path).unwrap_err().to_string();
        assert!(err.contains("100 bytes, fewer than 6144") && err.contains("truncated"), "{err}");
        std::fs::write(&path, vec![0u8; 1 << 17]).unwrap();
        let err = s.read(&path).unwrap_err().to_string();
        assert!(err.contains("131072 bytes, more than the 78336"), "{err}");
    }
}
