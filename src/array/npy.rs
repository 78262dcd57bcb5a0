//! The `.npy` header: encoding and a strict parser for the headers numpy writes.
//!
//! An array segment starts with a standard NPY header (format 1.0, or 2.0 when the header
//! is longer than 64 KiB), padded with spaces so that the data begins 64-byte aligned, as
//! numpy itself does. The parser accepts versions 1.0, 2.0 and 3.0 and the Python-literal
//! dictionary numpy writes; it never panics and never reads out of bounds, whatever the bytes.

use std::fs::File;

use crate::element::DType;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::shm;

/// The six magic bytes every `.npy` file starts with.
pub(crate) const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// Data alignment of the headers we write (numpy's `ARRAY_ALIGN`).
pub(crate) const ALIGN: usize = 64;
/// Longest header text we accept (numpy's own limit is 10 000 bytes by default).
const MAX_HEADER_TEXT: usize = 1 << 20;

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NpyHeader {
    pub(crate) dtype: DType,
    pub(crate) fortran_order: bool,
    pub(crate) shape: Vec<usize>,
}

impl NpyHeader {
    /// Bytes of data the shape needs, checked against `isize::MAX`.
    pub(crate) fn data_bytes(&self) -> Result<usize> {
        data_bytes(&self.shape, self.dtype)
    }

    /// Checks that segment `name`, whose content is `have` bytes (the trailer's payload
    /// length, or the whole file when it has no trailer), holds this header's data after
    /// `offset`. Without a trailer the data must end the file exactly: numpy's files do, and
    /// extra bytes are what is left of an ndshm segment whose end (trailer) was cut off.
    ///
    /// # Errors
    /// [`ErrorKind::Truncated`] in both cases.
    pub(crate) fn check_fits(
        &self,
        name: &str,
        offset: usize,
        have: usize,
        has_trailer: bool,
    ) -> Result<()> {
        let need = self.data_bytes()?;
        let Some(have) = have.checked_sub(offset) else {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!("segment '{name}' is truncated inside its {offset}-byte npy header"),
            ));
        };
        if need > have {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "segment '{name}' is truncated: its shape {:?} of {} needs {need} bytes of \
                     data, it holds {have}",
                    self.shape, self.dtype
                ),
            ));
        }
        if !has_trailer && have > need {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "segment '{name}' has {} bytes after its data but no ndshm trailer: it is a \
                     truncated or corrupted ndshm segment",
                    have - need
                ),
            ));
        }
        Ok(())
    }

    /// The header bytes, padded so that their length is a multiple of [`ALIGN`].
    pub(crate) fn encode(&self) -> Vec<u8> {
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => {
                let parts: Vec<String> = self.shape.iter().map(usize::to_string).collect();
                format!("({})", parts.join(", "))
            }
        };
        let dict = format!(
            "{{'descr': '{}', 'fortran_order': {}, 'shape': {}, }}",
            self.dtype.descr(),
            if self.fortran_order { "True" } else { "False" },
            shape
        );
        // Version 1.0 has a 2-byte length; fall back to 2.0 (4 bytes) for huge headers.
        let (major, prefix) = if dict.len() + 1 + 10 <= u16::MAX as usize {
            (1u8, 10)
        } else {
            (2u8, 12)
        };
        let total = (prefix + dict.len() + 1).div_ceil(ALIGN) * ALIGN;
        let text_len = total - prefix;
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(MAGIC);
        out.push(major);
        out.push(0);
        if major == 1 {
            out.extend_from_slice(&(text_len as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(text_len as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.resize(total - 1, b' ');
        out.push(b'\n');
        out
    }

    /// Parses a header at the start of `bytes`; returns it with the offset of the data.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidHeader`] for anything that is not an npy header,
    /// [`ErrorKind::Truncated`] when the header runs past `bytes`,
    /// [`ErrorKind::Unsupported`] for valid headers ndshm cannot hold,
    /// [`ErrorKind::SizeOverflow`] for a shape whose byte size overflows.
    pub(crate) fn parse(bytes: &[u8]) -> Result<(NpyHeader, usize)> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(invalid(
                "not an ndshm array or .npy file: it does not start with the magic bytes \
                 \\x93NUMPY (to attach a headerless segment such as one made by Python's \
                 SharedMemory, use open_raw with its shape and dtype)",
            ));
        }
        if bytes.len() < 10 {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "npy header truncated: {} bytes, the preamble alone needs 10",
                    bytes.len()
                ),
            ));
        }
        let (major, minor) = (bytes[6], bytes[7]);
        let (text_len, start) = match major {
            1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
            2 | 3 => {
                if bytes.len() < 12 {
                    return Err(Error::new(
                        ErrorKind::Truncated,
                        "npy 2.0 header truncated inside its length field",
                    ));
                }
                (
                    u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                    12,
                )
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                    "npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are)"
                ),
                ))
            }
        };
        if minor != 0 {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "npy format version {major}.{minor} is not supported (1.0, 2.0 and 3.0 are)"
                ),
            ));
        }
        if text_len > MAX_HEADER_TEXT {
            return Err(invalid(format!(
                "npy header claims {text_len} bytes of text; more than the {MAX_HEADER_TEXT} accepted"
            )));
        }
        let end = start + text_len;
        if end > bytes.len() {
            return Err(Error::new(
                ErrorKind::Truncated,
                format!(
                    "npy header truncated: it claims {end} bytes but the segment has {}",
                    bytes.len()
                ),
            ));
        }
        let text = std::str::from_utf8(&bytes[start..end])
            .map_err(|_| invalid("npy header text is not valid UTF-8/ASCII"))?;
        let header = parse_dict(text)?;
        header.data_bytes()?;
        Ok((header, end))
    }
}

/// Number of elements of `shape`, checked.
///
/// Also checks ndarray's rule for views: the product of the *non-zero* axis lengths must
/// fit in `isize`, even when another axis is 0 and the array is empty (a shape such as
/// `(2**63 + 1, 0)` would otherwise pass as "0 bytes" and make ndarray panic later).
pub(crate) fn element_count(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .filter(|&&n| n != 0)
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
        .filter(|&p| p <= isize::MAX as usize)
        .ok_or_else(|| overflow(shape, None))?;
    shape.iter().try_fold(1usize, |acc, &n| {
        acc.checked_mul(n).ok_or_else(|| overflow(shape, None))
    })
}

/// Bytes of data of `shape` elements of `dtype`, checked against `isize::MAX`.
pub(crate) fn data_bytes(shape: &[usize], dtype: DType) -> Result<usize> {
    let count = element_count(shape)?;
    match count.checked_mul(dtype.size()) {
        Some(bytes) if bytes <= isize::MAX as usize => Ok(bytes),
        _ => Err(overflow(shape, Some(dtype))),
    }
}

fn overflow(shape: &[usize], dtype: Option<DType>) -> Error {
    let what = match dtype {
        Some(d) => format!("times {} bytes per {d} element", d.size()),
        None => "elements".to_string(),
    };
    Error::new(
        ErrorKind::SizeOverflow,
        format!("shape {shape:?} overflows the address space ({what}); use a smaller shape"),
    )
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidHeader, msg)
}

/// A value of the header dictionary.
enum Value<'a> {
    Str(&'a str),
    Bool(bool),
    Tuple(Vec<usize>),
    Other,
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while let Some(b) = self.text.as_bytes().get(self.pos) {
            if b.is_ascii_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.text.as_bytes().get(self.pos).copied()
    }

    fn expect(&mut self, b: u8) -> Result<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(invalid(format!(
                "npy header dictionary: expected '{}' at byte {} of {:?}",
                b as char, self.pos, self.text
            )))
        }
    }

    fn string(&mut self) -> Result<&'a str> {
        let quote = match self.peek() {
            Some(q @ (b'\'' | b'"')) => q,
            _ => {
                return Err(invalid(format!(
                    "npy header dictionary: expected a quoted string at byte {}",
                    self.pos
                )))
            }
        };
        let start = self.pos + 1;
        let rest = &self.text.as_bytes()[start..];
        match rest.iter().position(|&b| b == quote) {
            Some(len) => {
                self.pos = start + len + 1;
                Ok(&self.text[start..start + len])
            }
            None => Err(invalid("npy header dictionary: unterminated string")),
        }
    }

    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        while let Some(b) = self.text.as_bytes().get(self.pos) {
            if b.is_ascii_alphanumeric() || *b == b'_' {
                self.pos += 1;
            } else {
                break;
            }
        }
        &self.text[start..self.pos]
    }

    fn value(&mut self) -> Result<Value<'a>> {
        match self.peek() {
            Some(b'\'' | b'"') => Ok(Value::Str(self.string()?)),
            Some(b'(') => {
                self.pos += 1;
                let mut dims = Vec::new();
                loop {
                    if self.peek() == Some(b')') {
                        self.pos += 1;
                        break;
                    }
                    let word = self.word();
                    let digits = word.strip_suffix('L').unwrap_or(word);
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(invalid(format!(
                            "npy header: shape entry {word:?} is not a non-negative integer"
                        )));
                    }
                    let dim = digits.parse::<usize>().map_err(|_| {
                        Error::new(
                            ErrorKind::SizeOverflow,
                            format!("npy header: shape entry {digits} does not fit in usize"),
                        )
                    })?;
                    dims.push(dim);
                    if dims.len() > 64 {
                        return Err(invalid("npy header: more than 64 dimensions"));
                    }
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b')') => {}
                        _ => return Err(invalid("npy header: malformed shape tuple")),
                    }
                }
                Ok(Value::Tuple(dims))
            }
            Some(b'[' | b'{') => Ok(Value::Other),
            _ => match self.word() {
                "True" => Ok(Value::Bool(true)),
                "False" => Ok(Value::Bool(false)),
                other => Err(invalid(format!(
                    "npy header dictionary: unexpected value {other:?}"
                ))),
            },
        }
    }
}

fn parse_dict(text: &str) -> Result<NpyHeader> {
    let mut cur = Cursor { text, pos: 0 };
    cur.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if cur.peek() == Some(b'}') {
            cur.pos += 1;
            break;
        }
        let key = cur.string()?;
        cur.expect(b':')?;
        let value = cur.value()?;
        let duplicate = match (key, value) {
            ("descr", Value::Str(s)) => descr.replace(s).is_some(),
            ("descr", Value::Other) => return Err(Error::new(
                ErrorKind::Unsupported,
                "structured (record) dtypes are not supported; save each field as its own array",
            )),
            ("fortran_order", Value::Bool(b)) => fortran.replace(b).is_some(),
            ("shape", Value::Tuple(t)) => shape.replace(t).is_some(),
            ("descr" | "fortran_order" | "shape", _) => {
                return Err(invalid(format!(
                    "npy header: key {key:?} has a value of the wrong type"
                )))
            }
            (other, _) => {
                return Err(invalid(format!(
                    "npy header: unexpected key {other:?} (only descr, fortran_order, shape)"
                )))
            }
        };
        if duplicate {
            return Err(invalid(format!("npy header: key {key:?} appears twice")));
        }
        match cur.peek() {
            Some(b',') => cur.pos += 1,
            Some(b'}') => {}
            _ => return Err(invalid("npy header dictionary: expected ',' or '}'")),
        }
    }
    if cur.peek().is_some() {
        return Err(invalid("npy header: text after the dictionary"));
    }
    match (descr, fortran, shape) {
        (Some(descr), Some(fortran_order), Some(shape)) => Ok(NpyHeader {
            dtype: DType::from_descr(descr)?,
            fortran_order,
            shape,
        }),
        _ => Err(invalid(
            "npy header: missing one of the keys descr, fortran_order, shape",
        )),
    }
}

/// The most bytes a `.npy` header may span: `NpyHeader::parse` accepts up to 1 MiB of text.
const MAX_HEADER_BYTES: u64 = 1 << 21;

/// Reads the `.npy` header at the start of `file` with `pread` and parses it; `len` is the
/// number of content bytes the header may span (the payload, or the whole file).
///
/// Headers are read from the file, never through a mapping: other processes may write the
/// segment meanwhile, and a slice over memory they write would be a data race (and a
/// truncated file would fault). Parsing works on the private copy.
///
/// The outer error is the OS error of the read; the inner result is
/// [`NpyHeader::parse`]'s, unchanged.
pub(crate) fn read_npy_header(
    file: &File,
    len: u64,
) -> std::io::Result<Result<(NpyHeader, usize)>> {
    let read = |want: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(want).unwrap_or(usize::MAX)];
        let got = shm::read_at(file, &mut buf, 0)?;
        buf.truncate(got);
        Ok(buf)
    };
    // Headers are 64 to a few hundred bytes: read one page, and all that a header may span
    // only when that page holds no whole header.
    const FIRST: u64 = 4096;
    let head = read(len.min(FIRST))?;
    Ok(match NpyHeader::parse(&head) {
        Err(e) if e.kind() == ErrorKind::Truncated && len > FIRST && head.len() as u64 == FIRST => {
            NpyHeader::parse(&read(len.min(MAX_HEADER_BYTES))?)
        }
        parsed => parsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dtype: DType, shape: &[usize], f: bool) -> NpyHeader {
        NpyHeader {
            dtype,
            fortran_order: f,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn empty_shapes_with_huge_axes_overflow() {
        // Zero elements, but ndarray cannot describe the view: a typed error, not a panic.
        let huge = isize::MAX as usize + 1;
        for shape in [vec![huge, 0], vec![0, huge, 1], vec![huge / 2, 3, 0]] {
            let err = data_bytes(&shape, DType::F64).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::SizeOverflow, "{shape:?}");
        }
        assert_eq!(data_bytes(&[isize::MAX as usize, 0], DType::U8).unwrap(), 0);
        assert_eq!(data_bytes(&[0, 0], DType::F64).unwrap(), 0);
    }

    #[test]
    fn round_trip_and_alignment() {
        for shape in [&[][..], &[0], &[5], &[1000, 3], &[2, 3, 4, 5]] {
            for f in [false, true] {
                let h = header(DType::F64, shape, f);
                let bytes = h.encode();
                assert_eq!(bytes.len() % ALIGN, 0);
                assert_eq!(*bytes.last().unwrap(), b'\n');
                let (back, off) = NpyHeader::parse(&bytes).unwrap();
                assert_eq!(back, h);
                assert_eq!(off, bytes.len());
            }
        }
    }

    #[test]
    fn numpy_written_header_parses() {
        // What numpy 1.26 writes for np.save(f, np.zeros((2, 3), dtype='<i4')).
        let text = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let padded = format!("{text:<117}\n");
        bytes.extend_from_slice(&(padded.len() as u16).to_le_bytes());
        bytes.extend_from_slice(padded.as_bytes());
        let (h, off) = NpyHeader::parse(&bytes).unwrap();
        assert_eq!(h, header(DType::I32, &[2, 3], false));
        assert_eq!(off, 128);
    }

    #[test]
    fn errors_are_typed() {
        let good = header(DType::F64, &[4], false).encode();
        let kind = |b: &[u8]| NpyHeader::parse(b).unwrap_err().kind();
        assert_eq!(kind(b""), ErrorKind::InvalidHeader);
        assert_eq!(kind(b"hello world, not npy"), ErrorKind::InvalidHeader);
        assert_eq!(kind(&good[..8]), ErrorKind::Truncated);
        assert_eq!(kind(&good[..40]), ErrorKind::Truncated);
        let mut v9 = good.clone();
        v9[6] = 9;
        assert_eq!(kind(&v9), ErrorKind::Unsupported);
        let mut corrupt = good.clone();
        corrupt[12] = b'#';
        assert_eq!(kind(&corrupt), ErrorKind::InvalidHeader);
        let huge = header(DType::F64, &[usize::MAX / 4, 3], false).encode();
        assert_eq!(kind(&huge), ErrorKind::SizeOverflow);
        let big_endian = {
            let text = "{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }";
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&(text.len() as u16).to_le_bytes());
            b.extend_from_slice(text.as_bytes());
            b
        };
        assert_eq!(kind(&big_endian), ErrorKind::Unsupported);
    }
}
