//! `.npy` files: [`SharedNdArray::load`]/[`save`](SharedNdArray::save) and their
//! [`DynSharedArray`] twins. Data is copied with `read`/`pread`, never through a slice over
//! a mapping that other processes may be writing.

use std::fs::File;
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::Path;

use ndarray::Dimension;

use crate::array::dynamic::DynSharedArray;
use crate::array::npy::NpyHeader;
use crate::array::typed::SharedNdArray;
use crate::array::typed::{dim_from_shape, type_mismatch};
use crate::array::{AccessMode, ReadWrite};
use crate::element::Element;
use crate::error::{Error, ErrorKind, Result};
use crate::segment::trailer::SegmentKind;
use crate::segment::{CreateOptions, Segment};
use crate::sys::shm;

impl<T: Element, D: Dimension> SharedNdArray<T, D, ReadWrite> {
    /// Copies a `.npy` file (as numpy's `np.save` writes it) into a new segment `name`.
    ///
    /// # Errors
    /// The errors of reading the file and of [`zeros`](Self::zeros), plus
    /// [`ErrorKind::TypeMismatch`]/[`ErrorKind::DimensionMismatch`] when the file holds
    /// another type (checked before anything is created).
    ///
    /// # Examples
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("ndshm-doc-load-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// # let (a, b) = (format!("doc-load-a-{}", std::process::id()), format!("doc-load-b-{}", std::process::id()));
    /// use ndshm::SharedNdArray;
    /// let src = SharedNdArray::<u16, ndarray::Ix1>::from_elem(&a, 3, 9)?;
    /// src.save(dir.join("x.npy"))?;
    /// let back = SharedNdArray::<u16, ndarray::Ix1>::load(&b, dir.join("x.npy"))?;
    /// assert_eq!(back.as_slice(), Some(&[9, 9, 9][..]));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn load(segment: impl Into<CreateOptions>, path: impl AsRef<Path>) -> Result<Self> {
        let opts = segment.into();
        let name = opts.describe_name();
        let name = name.as_str();
        let (seg, header, offset) = load_segment(path.as_ref(), &opts, |h| {
            if h.dtype != T::DTYPE {
                return Err(type_mismatch(name, h.dtype, T::DTYPE));
            }
            dim_from_shape::<D>(name, &h.shape).map(drop)
        })?;
        let name = seg.name().to_owned();
        let dim = dim_from_shape(&name, &header.shape)?;
        Ok(SharedNdArray {
            seg,
            dim,
            fortran: header.fortran_order,
            offset,
            _marker: PhantomData,
        })
    }
}

impl<T: Element, D: Dimension, A: AccessMode> SharedNdArray<T, D, A> {
    /// Writes the array as a `.npy` file numpy loads (standard header, no trailer). The data
    /// is copied from the segment's file with `pread`, not through the mapping.
    ///
    /// # Errors
    /// An OS error creating or writing `path`; [`ErrorKind::Truncated`] when the segment
    /// file shrank behind the handle's back (the partial file is removed);
    /// [`ErrorKind::WrongProcess`] for a handle of another process.
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-save-{}", std::process::id());
    /// # let path = std::env::temp_dir().join(format!("{name}.npy"));
    /// let a = ndshm::SharedNdArray::<f64, ndarray::Ix2>::from_elem(&name, (2, 2), 1.5)?;
    /// a.save(&path)?; // np.load(path) reads it
    /// let bytes = std::fs::read(&path).unwrap();
    /// assert_eq!(&bytes[..6], b"\x93NUMPY");
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.check_bound_here()?;
        let header = NpyHeader {
            dtype: T::DTYPE,
            fortran_order: self.fortran,
            shape: self.shape().to_vec(),
        };
        save_segment(
            path.as_ref(),
            &header,
            &self.seg,
            self.offset,
            self.nbytes(),
        )
    }
}

impl DynSharedArray {
    /// Copies a `.npy` file of any supported type into a new segment `name`.
    ///
    /// # Errors
    /// As [`SharedNdArray::load`].
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-dyn-load-{}", std::process::id());
    /// # let path = std::env::temp_dir().join(format!("{name}.npy"));
    /// # ndshm::SharedNdArray::<i32, ndarray::Ix1>::from_elem(format!("{name}-src"), 4, 3)?.save(&path)?;
    /// // A .npy file of a type the program learns only at run time:
    /// let d = ndshm::DynSharedArray::load(&name, &path)?;
    /// assert_eq!((d.dtype(), d.shape()), (ndshm::DType::I32, &[4][..]));
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn load(segment: impl Into<CreateOptions>, path: impl AsRef<Path>) -> Result<Self> {
        let (seg, header, offset) = load_segment(path.as_ref(), &segment.into(), |_| Ok(()))?;
        Ok(DynSharedArray {
            seg,
            header,
            offset,
            _access: PhantomData,
        })
    }
}

impl<A: AccessMode> DynSharedArray<A> {
    /// Writes the array as a `.npy` file, as [`SharedNdArray::save`] does.
    ///
    /// # Errors
    /// As [`SharedNdArray::save`].
    ///
    /// # Examples
    /// ```
    /// # let name = format!("doc-dyn-save-{}", std::process::id());
    /// # let path = std::env::temp_dir().join(format!("{name}.npy"));
    /// let mut a = ndshm::SharedNdArray::<u8, ndarray::Ix1>::from_elem(&name, 2, 1)?;
    /// a.persist();
    /// drop(a);
    /// // SAFETY: no other process writes this segment in this example.
    /// let d = unsafe { ndshm::DynSharedArray::open_read_only(&name)? };
    /// d.save(&path)?;
    /// assert!(std::fs::metadata(&path).unwrap().len() > 2);
    /// ndshm::unlink(&name)?;
    /// # std::fs::remove_file(&path).unwrap();
    /// # Ok::<(), ndshm::Error>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.check_bound_here()?;
        save_segment(
            path.as_ref(),
            &self.header,
            &self.seg,
            self.offset,
            self.nbytes(),
        )
    }
}

/// Creates segment `name` from a `.npy` file: reads and checks the header, lets `check`
/// refuse it before anything is created, then reads the data straight into the segment.
fn load_segment(
    path: &Path,
    opts: &CreateOptions,
    check: impl FnOnce(&NpyHeader) -> Result<()>,
) -> Result<(Segment, NpyHeader, usize)> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut file = File::open(path).map_err(|e| Error::os(ctx("cannot open"), e))?;
    let file_len = file
        .metadata()
        .map_err(|e| Error::os(ctx("cannot stat"), e))?
        .len();
    let mut head = Vec::new();
    (&mut file)
        .take(1 << 21)
        .read_to_end(&mut head)
        .map_err(|e| Error::os(ctx("cannot read"), e))?;
    let (header, file_offset) = NpyHeader::parse(&head)
        .map_err(|e| Error::new(e.kind(), format!("{}: {}", path.display(), e.message())))?;
    check(&header)?;
    let data_bytes = header.data_bytes()?;
    if (file_len as u128) < file_offset as u128 + data_bytes as u128 {
        return Err(Error::new(
            ErrorKind::Truncated,
            format!(
                "{} is truncated: shape {:?} of {} needs {data_bytes} bytes of data after the \
                 header, the file has {}",
                path.display(),
                header.shape,
                header.dtype,
                file_len.saturating_sub(file_offset as u64)
            ),
        ));
    }
    let ours = NpyHeader {
        fortran_order: header.fortran_order,
        ..header.clone()
    };
    let encoded = ours.encode();
    let offset = encoded.len();
    let seg = Segment::create(opts, SegmentKind::Array, offset + data_bytes, |bytes| {
        let (h, data) = bytes.split_at_mut(offset);
        h.copy_from_slice(&encoded);
        let from_head = head.len().saturating_sub(file_offset).min(data_bytes);
        data[..from_head].copy_from_slice(&head[file_offset..file_offset + from_head]);
        file.read_exact(&mut data[from_head..])
            .map_err(|e| Error::os(ctx("cannot read the data of"), e))
    })?;
    Ok((seg, header, offset))
}

/// Writes `header` and then `len` bytes of `seg` from byte `offset` to a new `.npy` file at
/// `path`. The data is copied with `pread` from the segment's file, never through a slice
/// over the mapping, which other processes may be writing (a data race) or may have
/// truncated (a SIGBUS); a segment that shrank is an error and the partial file is removed.
fn save_segment(
    path: &Path,
    header: &NpyHeader,
    seg: &Segment,
    offset: usize,
    len: usize,
) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let mut out = File::create(path).map_err(|e| Error::os(ctx("cannot create"), e))?;
    let copied = (|| -> Result<()> {
        out.write_all(&header.encode())
            .map_err(|e| Error::os(ctx("cannot write"), e))?;
        let mut buf = vec![0u8; len.min(1 << 20)];
        let mut done = 0;
        while done < len {
            let want = (len - done).min(buf.len());
            let got = shm::read_at(seg.file(), &mut buf[..want], (offset + done) as u64)
                .map_err(|e| Error::os(format!("cannot read segment '{}'", seg.name()), e))?;
            if got < want {
                return Err(Error::new(
                    ErrorKind::Truncated,
                    format!(
                        "segment '{}' shrank while it was being saved: it ends {} bytes into \
                         its {len} bytes of data; nothing was saved",
                        seg.name(),
                        done + got
                    ),
                ));
            }
            out.write_all(&buf[..want])
                .map_err(|e| Error::os(ctx("cannot write"), e))?;
            done += want;
        }
        out.flush().map_err(|e| Error::os(ctx("cannot write"), e))
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(path);
    }
    copied
}
