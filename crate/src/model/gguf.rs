//! GGUF reader (versions 2 and 3): metadata, tensor infos and tensor bytes, from a byte buffer.
//!
//! Everything read from the file is untrusted: every count, length, dimension and offset is
//! checked against the bytes actually present before anything is allocated, so a truncated or
//! hostile file gives a [`GgufError`], never a panic or a huge allocation.

use std::collections::HashMap;
use std::sync::Arc;

use super::quant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// GGML tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// No real tensor comes near this (2^40 elements is 4 TiB of f32); it keeps sizes far from overflow.
const MAX_ELEMENTS: u64 = 1 << 40;
/// Arrays nest in no real file; a cap stops stack exhaustion by a hostile one.
const MAX_ARRAY_DEPTH: u32 = 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GgufError {
    #[error("not a GGUF file: magic bytes are {0:02x?}, expected \"GGUF\"")]
    BadMagic([u8; 4]),
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error(
        "GGUF file is truncated: {what} at byte {offset} needs {needed} bytes, {available} remain"
    )]
    Truncated {
        what: String,
        offset: usize,
        needed: u64,
        available: usize,
    },
    #[error("GGUF {what} is {value}, which exceeds what the file could hold ({limit})")]
    TooLarge {
        what: String,
        value: u64,
        limit: u64,
    },
    #[error("GGUF metadata value type {0} is unknown")]
    UnknownValueType(u32),
    #[error("GGUF tensor '{name}' has unsupported ggml type {ty}")]
    UnknownTensorType { name: String, ty: u32 },
    #[error("GGUF tensor '{name}': {reason}")]
    BadTensor { name: String, reason: String },
    #[error("GGUF string at byte {0} is not valid UTF-8")]
    InvalidUtf8(usize),
    #[error("GGUF alignment {0} is not a power of two")]
    BadAlignment(u64),
    #[error("GGUF metadata key '{0}' appears twice")]
    DuplicateKey(String),
    #[error("GGUF metadata key '{key}' is missing or not {expected}")]
    MissingKey { key: String, expected: &'static str },
    #[error("GGUF has no tensor named '{0}'")]
    MissingTensor(String),
    #[error("cannot read GGUF file {path}: {reason}")]
    Io { path: String, reason: String },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor's bytes are and how to read them.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGML order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file holding its own bytes (a file's contents, or what `fetch` returned).
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    bytes: Arc<[u8]>,
}

impl Gguf {
    pub fn open(path: &std::path::Path) -> Result<Self, GgufError> {
        let bytes = std::fs::read(path).map_err(|e| GgufError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(bytes)
    }

    pub fn parse(bytes: impl Into<Arc<[u8]>>) -> Result<Self, GgufError> {
        let bytes: Arc<[u8]> = bytes.into();
        let mut r = Reader {
            buf: &bytes,
            pos: 0,
        };
        let version = r.header()?;
        // Each tensor info needs at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes,
        // each key-value at least 8 (key len) + 4 (type) + 1 byte.
        let n_tensors = r.count("tensor count", 24)?;
        let n_kv = r.count("metadata count", 13)?;
        let metadata = r.metadata(n_kv)?;
        let alignment = alignment(&metadata)?;
        let raw = (0..n_tensors)
            .map(|_| r.tensor_info())
            .collect::<Result<Vec<_>, _>>()?;
        let layout = DataLayout {
            start: (r.pos as u64).div_ceil(alignment) * alignment,
            alignment,
            file_len: bytes.len() as u64,
        };
        let mut tensors = Vec::with_capacity(raw.len());
        let mut names = std::collections::HashSet::with_capacity(raw.len());
        for t in raw {
            let info = layout.place(t)?;
            if !names.insert(info.name.clone()) {
                return Err(GgufError::BadTensor {
                    name: info.name,
                    reason: "appears twice".into(),
                });
            }
            tensors.push(info);
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
            bytes,
        })
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| GgufError::MissingTensor(name.into()))
    }

    /// The raw bytes of a tensor, as stored (quantized blocks or plain floats).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.bytes[info.start..info.start + info.len]
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or(GgufError::MissingKey {
                key: key.into(),
                expected: "an integer",
            })
    }

    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)
            .and_then(Value::as_f64)
            .ok_or(GgufError::MissingKey {
                key: key.into(),
                expected: "a number",
            })
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get(key)
            .and_then(Value::as_str)
            .ok_or(GgufError::MissingKey {
                key: key.into(),
                expected: "a string",
            })
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        self.get(key)
            .and_then(Value::as_array)
            .ok_or(GgufError::MissingKey {
                key: key.into(),
                expected: "an array",
            })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The magic bytes and the version.
    fn header(&mut self) -> Result<u32, GgufError> {
        let magic: [u8; 4] = self.array("magic")?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic(magic));
        }
        let version = self.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion(version));
        }
        Ok(version)
    }

    /// `n` key-value pairs; a key given twice is an error.
    fn metadata(&mut self, n: usize) -> Result<HashMap<String, Value>, GgufError> {
        let mut metadata = HashMap::with_capacity(n);
        for _ in 0..n {
            let key = self.string("metadata key")?;
            let ty = self.u32("metadata value type")?;
            let value = self.value(ty, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(GgufError::DuplicateKey(key));
            }
        }
        Ok(metadata)
    }

    fn tensor_info(&mut self) -> Result<RawTensor, GgufError> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::BadTensor {
                name,
                reason: format!("{n_dims} dimensions (1 to {MAX_DIMS} allowed)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let ty = self.u32("tensor type")?;
        let offset = self.u64("tensor offset")?;
        Ok(RawTensor {
            name,
            dims,
            ty,
            offset,
        })
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() as u64 {
            return Err(GgufError::Truncated {
                what: what.into(),
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        Ok(self.take(N as u64, what)?.try_into().expect("N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items that each take at least `min_item_bytes`: checked against what remains.
    fn count(&mut self, what: &str, min_item_bytes: u64) -> Result<usize, GgufError> {
        let n = self.u64(what)?;
        let limit = self.remaining() as u64 / min_item_bytes.max(1);
        if n > limit {
            return Err(GgufError::TooLarge {
                what: what.into(),
                value: n,
                limit,
            });
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let at = self.pos;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8(at))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>("u8")?[0]),
            1 => Value::I8(self.array::<1>("i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(GgufError::TooLarge {
                        what: "bool value".into(),
                        value: b as u64,
                        limit: 1,
                    });
                }
            },
            8 => Value::String(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::TooLarge {
                        what: "array nesting".into(),
                        value: depth as u64 + 1,
                        limit: MAX_ARRAY_DEPTH as u64,
                    });
                }
                let elem_ty = self.u32("array element type")?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    10..=12 => 8,
                    8 => 8,
                    9 => 12,
                    t => return Err(GgufError::UnknownValueType(t)),
                };
                let n = self.count("array length", min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            t => return Err(GgufError::UnknownValueType(t)),
        })
    }
}

/// `general.alignment`, or GGUF's default.
fn alignment(metadata: &HashMap<String, Value>) -> Result<u64, GgufError> {
    match metadata.get("general.alignment") {
        None => Ok(DEFAULT_ALIGNMENT),
        Some(v) => {
            let a = v.as_u64().unwrap_or(0);
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::BadAlignment(a));
            }
            Ok(a)
        }
    }
}

/// A tensor info as the file states it, before any check against the data section.
struct RawTensor {
    name: String,
    dims: Vec<u64>,
    ty: u32,
    offset: u64,
}

/// Where the tensor data lies: from `start` (aligned) to the end of the file.
struct DataLayout {
    start: u64,
    alignment: u64,
    file_len: u64,
}

impl DataLayout {
    /// Checks a tensor's type, shape and byte range against the file.
    fn place(&self, t: RawTensor) -> Result<TensorInfo, GgufError> {
        let RawTensor {
            name,
            dims,
            ty,
            offset,
        } = t;
        let bad = |reason: String| GgufError::BadTensor {
            name: name.clone(),
            reason,
        };
        let ty = GgmlType::from_u32(ty).ok_or_else(|| GgufError::UnknownTensorType {
            name: name.clone(),
            ty,
        })?;
        let n = element_count(&dims).map_err(bad)?;
        let (block, block_bytes) = ty.block();
        if dims[0] % block as u64 != 0 {
            return Err(bad(format!(
                "row length {} is not a multiple of the {ty:?} block size {block}",
                dims[0]
            )));
        }
        let len = n / block as u64 * block_bytes as u64;
        if offset % self.alignment != 0 {
            return Err(bad(format!(
                "offset {offset} is not aligned to {}",
                self.alignment
            )));
        }
        let start = self
            .start
            .checked_add(offset)
            .ok_or_else(|| bad("offset overflows".into()))?;
        let end = start
            .checked_add(len)
            .ok_or_else(|| bad("size overflows".into()))?;
        if end > self.file_len {
            return Err(bad(format!(
                "bytes {start}..{end} lie past the end of the file ({} bytes)",
                self.file_len
            )));
        }
        Ok(TensorInfo {
            name,
            dims,
            ty,
            start: start as usize,
            len: len as usize,
        })
    }
}

/// The number of elements of `dims`: no zero dimension, at most [`MAX_ELEMENTS`].
fn element_count(dims: &[u64]) -> Result<u64, String> {
    let mut n: u64 = 1;
    for &d in dims {
        if d == 0 {
            return Err("has a zero dimension".into());
        }
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| format!("claims more than 2^40 elements (dims {dims:?})"))?;
    }
    Ok(n)
}
