//! Element types: the Rust types a segment can hold, with their NumPy and Python codes.

use std::fmt;

use bytemuck::Pod;
use num_complex::{Complex32, Complex64};

use crate::error::{Error, ErrorKind, Result};

/// The element type of a segment, as a value.
///
/// Each has a NumPy type string ([`descr`](DType::descr), written in the `.npy` header) and,
/// where Python has one, the type code of `array.array` / `multiprocessing.Value` /
/// `multiprocessing.Array` ([`typecode`](DType::typecode)), so that `Value('d', 0.0)` is
/// `SharedValue::<f64>` here.
///
/// | Rust | `DType` | NumPy | Python code |
/// |---|---|---|---|
/// | `i8` | `I8` | `\|i1` | `'b'` |
/// | `u8` | `U8` | `\|u1` | `'B'` |
/// | `i16` | `I16` | `<i2` | `'h'` |
/// | `u16` | `U16` | `<u2` | `'H'` |
/// | `i32` | `I32` | `<i4` | `'i'` |
/// | `u32` | `U32` | `<u4` | `'I'` |
/// | `i64` | `I64` | `<i8` | `'q'` (and `'l'`: C `long` is 64-bit on Linux x86-64/aarch64) |
/// | `u64` | `U64` | `<u8` | `'Q'` (and `'L'`) |
/// | `f32` | `F32` | `<f4` | `'f'` |
/// | `f64` | `F64` | `<f8` | `'d'` |
/// | `Complex32` | `C64` | `<c8` | none |
/// | `Complex64` | `C128` | `<c16` | none |
///
/// `bool` is not offered: a byte written by another process may hold any value, and a Rust
/// `bool` other than 0 or 1 is undefined behaviour. Use `u8`.
///
/// # Examples
/// ```
/// use ndshm::DType;
/// assert_eq!(DType::from_typecode('d').unwrap(), DType::F64);
/// assert_eq!(DType::F64.descr(), "<f8");
/// assert_eq!(DType::from_descr("<i4").unwrap(), DType::I32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// `i8`
    I8,
    /// `u8`
    U8,
    /// `i16`
    I16,
    /// `u16`
    U16,
    /// `i32`
    I32,
    /// `u32`
    U32,
    /// `i64`
    I64,
    /// `u64`
    U64,
    /// `f32`
    F32,
    /// `f64`
    F64,
    /// `Complex<f32>` (NumPy `complex64`)
    C64,
    /// `Complex<f64>` (NumPy `complex128`)
    C128,
}

impl DType {
    /// Every supported element type.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(ndshm::DType::ALL.len(), 12);
    /// assert!(ndshm::DType::ALL.iter().all(|d| ndshm::DType::from_descr(d.descr()).ok() == Some(*d)));
    /// ```
    pub const ALL: [DType; 12] = [
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::F32,
        DType::F64,
        DType::C64,
        DType::C128,
    ];

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 => 1,
            DType::I16 | DType::U16 => 2,
            DType::I32 | DType::U32 | DType::F32 => 4,
            DType::I64 | DType::U64 | DType::F64 | DType::C64 => 8,
            DType::C128 => 16,
        }
    }

    /// Alignment of one element in bytes.
    pub fn align(self) -> usize {
        match self {
            DType::C64 => 4,
            DType::C128 => 8,
            other => other.size(),
        }
    }

    /// The NumPy type string written in `.npy` headers (`"<f8"`…).
    pub fn descr(self) -> &'static str {
        match self {
            DType::I8 => "|i1",
            DType::U8 => "|u1",
            DType::I16 => "<i2",
            DType::U16 => "<u2",
            DType::I32 => "<i4",
            DType::U32 => "<u4",
            DType::I64 => "<i8",
            DType::U64 => "<u8",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::C64 => "<c8",
            DType::C128 => "<c16",
        }
    }

    /// The short name used by the command line (`f8`, `i4`, `c16`…): the descr without its
    /// byte-order character.
    pub fn short_name(self) -> &'static str {
        &self.descr()[1..]
    }

    /// The Rust type's name (`"f64"`…).
    pub fn rust_name(self) -> &'static str {
        match self {
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::U16 => "u16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::U64 => "u64",
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::C64 => "Complex<f32>",
            DType::C128 => "Complex<f64>",
        }
    }

    /// The Python `array`/`multiprocessing` type code, if Python has one for this type.
    pub fn typecode(self) -> Option<char> {
        match self {
            DType::I8 => Some('b'),
            DType::U8 => Some('B'),
            DType::I16 => Some('h'),
            DType::U16 => Some('H'),
            DType::I32 => Some('i'),
            DType::U32 => Some('I'),
            DType::I64 => Some('q'),
            DType::U64 => Some('Q'),
            DType::F32 => Some('f'),
            DType::F64 => Some('d'),
            DType::C64 | DType::C128 => None,
        }
    }

    /// The element type of a Python type code (`'d'` → `F64`, `'l'` → `I64` on LP64 Linux).
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for a code with no ndshm counterpart (`'c'`, `'u'`…).
    pub fn from_typecode(code: char) -> Result<DType> {
        Ok(match code {
            'b' => DType::I8,
            'B' => DType::U8,
            'h' => DType::I16,
            'H' => DType::U16,
            'i' => DType::I32,
            'I' => DType::U32,
            'l' | 'q' => DType::I64,
            'L' | 'Q' => DType::U64,
            'f' => DType::F32,
            'd' => DType::F64,
            other => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "Python type code {other:?} has no ndshm element type; \
                         use one of b B h H i I l L q Q f d"
                    ),
                ))
            }
        })
    }

    /// Parses a NumPy type string as found in `.npy` headers, or a short name (`f8`,
    /// `float64`, `d`).
    ///
    /// `<` and `=` (little-endian, native here) and `|` (no byte order) are accepted.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for big-endian, structured, string, object or unknown types.
    ///
    /// # Examples
    /// ```
    /// use ndshm::DType;
    /// assert_eq!(DType::from_descr("<f8")?, DType::F64);
    /// assert_eq!(DType::from_descr("float32")?, DType::F32);
    /// assert_eq!(DType::F64.descr(), "<f8");
    /// assert_eq!((DType::C128.size(), DType::C128.align()), (16, 8));
    /// assert_eq!(DType::from_typecode('d')?, DType::F64); // Python's Value('d', ..)
    /// assert_eq!(DType::I32.typecode(), Some('i'));
    /// assert!(DType::from_descr(">f8").is_err()); // big-endian: refused, not misread
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn from_descr(descr: &str) -> Result<DType> {
        let trimmed = descr.trim();
        let body = match trimmed.as_bytes().first() {
            Some(b'<' | b'=' | b'|') => &trimmed[1..],
            Some(b'>') => {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "big-endian dtype {trimmed:?} is not supported; convert it in numpy \
                         first with arr.astype(arr.dtype.newbyteorder('<'))"
                    ),
                ))
            }
            _ => trimmed,
        };
        let dtype = match body {
            "i1" | "int8" => DType::I8,
            "u1" | "uint8" => DType::U8,
            "i2" | "int16" => DType::I16,
            "u2" | "uint16" => DType::U16,
            "i4" | "int32" => DType::I32,
            "u4" | "uint32" => DType::U32,
            "i8" | "int64" => DType::I64,
            "u8" | "uint64" => DType::U64,
            "f4" | "float32" => DType::F32,
            "f8" | "float64" => DType::F64,
            "c8" | "complex64" => DType::C64,
            "c16" | "complex128" => DType::C128,
            _ => {
                if body.chars().count() == 1 {
                    if let Some(code) = body.chars().next() {
                        if let Ok(dtype) = DType::from_typecode(code) {
                            return Ok(dtype);
                        }
                    }
                }
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "dtype {trimmed:?} is not supported; ndshm holds i1 u1 i2 u2 i4 u4 i8 u8 \
                         f4 f8 c8 c16 (bool, strings, objects and structured dtypes are not)"
                    ),
                ));
            }
        };
        Ok(dtype)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

mod private {
    pub trait Sealed {}
}

/// A Rust type that can live in a segment: plain old data whose every bit pattern is valid.
///
/// Implemented for the types of [`DType`]; sealed, so that the mapping from Rust type to
/// NumPy type string stays one-to-one.
///
/// # Examples
/// ```
/// use ndshm::{DType, Element};
/// fn describe<T: Element>() -> (DType, &'static str) {
///     (T::DTYPE, T::DTYPE.descr())
/// }
/// assert_eq!(describe::<f64>(), (DType::F64, "<f8"));
/// assert_eq!(describe::<num_complex::Complex32>().0, DType::C64);
/// ```
pub trait Element:
    Pod + Send + Sync + PartialEq + fmt::Debug + fmt::Display + private::Sealed + 'static
{
    /// The element type as a value.
    const DTYPE: DType;

    /// Converts an `f64` the way `as` does (saturating for integers; a complex number gets
    /// it as its real part): for fills such as `arange`.
    ///
    /// ```
    /// use ndshm::Element;
    /// assert_eq!(<u8 as Element>::from_f64(300.0), 255);
    /// assert_eq!(<f32 as Element>::from_f64(1.5), 1.5);
    /// ```
    fn from_f64(x: f64) -> Self;
}

macro_rules! element {
    ($($t:ty => $d:ident),* $(,)?) => {$(
        impl private::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$d;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
        }
    )*};
}

element! {
    i8 => I8, u8 => U8, i16 => I16, u16 => U16, i32 => I32, u32 => U32,
    i64 => I64, u64 => U64, f32 => F32, f64 => F64,
}

impl private::Sealed for Complex32 {}
impl Element for Complex32 {
    const DTYPE: DType = DType::C64;
    fn from_f64(x: f64) -> Self {
        Complex32::new(x as f32, 0.0)
    }
}

impl private::Sealed for Complex64 {}
impl Element for Complex64 {
    const DTYPE: DType = DType::C128;
    fn from_f64(x: f64) -> Self {
        Complex64::new(x, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descr_round_trips() {
        for d in DType::ALL {
            assert_eq!(DType::from_descr(d.descr()).unwrap(), d);
            assert_eq!(DType::from_descr(d.short_name()).unwrap(), d);
            if let Some(code) = d.typecode() {
                assert_eq!(DType::from_typecode(code).unwrap(), d);
            }
        }
    }

    #[test]
    fn sizes_match_rust() {
        assert_eq!(DType::F64.size(), std::mem::size_of::<f64>());
        assert_eq!(DType::C128.size(), std::mem::size_of::<Complex64>());
        assert_eq!(DType::C64.align(), std::mem::align_of::<Complex32>());
        assert_eq!(DType::C128.align(), std::mem::align_of::<Complex64>());
    }

    #[test]
    fn rejects_big_endian_and_structured() {
        assert_eq!(
            DType::from_descr(">f8").unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            DType::from_descr("|b1").unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            DType::from_typecode('c').unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(DType::from_typecode('l').unwrap(), DType::I64);
    }
}
