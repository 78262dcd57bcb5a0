//! `ndshm`: create, list, inspect, dump, load, save, remove and garbage-collect the
//! numpy-compatible shared-memory arrays of the `ndshm` library.
//!
//! A thin layer over the library's public API. Output goes through one locked, buffered
//! stdout whose errors are values (`output::Out`): a reader that closes the pipe ends the
//! command quietly, a full disk is an error message. Errors go to stderr as
//! `ndshm: error: ...`; the exit status is 0 (success), 1 (error) or 2 (usage).

mod output;
mod shape;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ndshm::ndarray::IxDyn;
use ndshm::{
    CreateOptions, DType, DynSharedArray, Element, ErrorKind, OwnerStatus, SegmentInfo,
    SharedNdArray,
};
use serde_json::json;

use output::{
    alive_text, human_size, outln, owner_note, report_error, segment_json, shape_text, table,
    yes_no, Align, Failure, Out, JSON_FIELDS,
};

const EXIT_STATUS: &str = "\
Exit status:
  0  success (also when the reader of the output closes the pipe early, as `| head` does)
  1  an error; the message on stderr starts with 'ndshm: error:'
  2  a usage error: unknown command or option, or a malformed value such as --shape 3,,4";

/// Named shared-memory n-d arrays: numpy-compatible segments in /dev/shm.
///
/// Every array segment is a valid .npy file (numpy reads it with
/// np.load("/dev/shm/NAME", mmap_mode="r+")) followed by a small ndshm trailer that records
/// its owner process. Segment names are file names in /dev/shm (a leading '/' is ignored).
#[derive(Debug, Parser)]
#[command(name = "ndshm", version, about, long_about, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a persistent array segment and print its name.
    #[command(
        after_help = "Example:\n  ndshm create temps --dtype f4 --shape 1000,3 --fill arange"
    )]
    Create {
        /// Segment name (a leading '/' is ignored).
        name: String,
        /// Element type: f8, f4, i8, i4, i2, i1, u8, u4, u2, u1, c8, c16 (or <f8, float64, 'd'…).
        #[arg(long, default_value = "f8")]
        dtype: String,
        /// Shape: the length of each axis, comma-separated, e.g. 1000,3; '()' makes a 0-d
        /// array. Only decimal digits and commas: no signs, spaces or empty entries.
        #[arg(long, value_name = "N[,N...]", allow_hyphen_values = true,
              value_parser = shape::parse_shape)]
        shape: Shape,
        /// Initial contents.
        #[arg(long, value_enum, default_value_t = Fill::Zeros)]
        fill: Fill,
        /// Permission bits, in octal (600: only you; 644: others may read).
        #[arg(long, default_value = "600", value_name = "OCTAL", value_parser = shape::parse_mode)]
        mode: u32,
        /// Lay the array out in Fortran (column-major) order.
        #[arg(long)]
        fortran: bool,
    },
    /// Print a segment's kind, dtype, shape, size, layout, owner and permissions.
    #[command(after_long_help = JSON_FIELDS)]
    Info {
        /// Segment name.
        name: String,
        /// Print one JSON object instead (fields under --help).
        #[arg(long)]
        json: bool,
    },
    /// List ndshm segments, with a total; stale ones (owner dead) are marked in STALE.
    #[command(after_long_help = JSON_FIELDS)]
    Ls {
        /// Sizes in bytes instead of KiB/MiB/GiB.
        #[arg(long)]
        bytes: bool,
        /// Print a JSON array of segment objects instead (fields under --help).
        #[arg(long)]
        json: bool,
    },
    /// Remove stale segments (owner dead, not persistent); prints what it removed.
    ///
    /// A segment is stale when it is an ndshm segment, not persistent, and its owner process
    /// has provably exited. gc never touches a live owner's segment, one whose owner cannot
    /// be checked, or a file that is not an ndshm segment.
    #[command(after_long_help = GC_JSON_FIELDS)]
    Gc {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only segments whose name starts with this prefix.
        #[arg(long)]
        prefix: Option<String>,
        /// Print one JSON object instead (fields under --help).
        #[arg(long)]
        json: bool,
    },
    /// Print the array (abbreviated for big arrays).
    Dump {
        /// Segment name.
        name: String,
    },
    /// Remove segments (every name is tried, even after one fails).
    ///
    /// Without --force, refuses a segment whose owner process is alive (or cannot be
    /// checked) and a file that is neither an ndshm segment nor a .npy file, saying what it is.
    /// Exits with status 1 when any name could not be removed.
    Rm {
        /// Segment names.
        #[arg(required = true)]
        names: Vec<String>,
        /// Remove even a live owner's segment, or a file that is not an ndshm segment.
        #[arg(long, short)]
        force: bool,
    },
    /// Copy a .npy file into a new persistent segment and print its name.
    Load {
        /// Segment name.
        name: String,
        /// The .npy file.
        file: PathBuf,
    },
    /// Write a segment out as a .npy file (only needs read permission on the segment).
    Save {
        /// Segment name.
        name: String,
        /// The .npy file to write (replaced if it exists).
        file: PathBuf,
    },
}

const GC_JSON_FIELDS: &str = "JSON (--json): an object with\n  \
     dry_run   true for --dry-run\n  \
     segments  the segments removed (or that would be removed), as objects with the fields below\n  \
     left      segments kept although they may look abandoned: objects {name, note}\n\n\
     The fields of a segment are those of `ndshm ls --json` (see `ndshm ls --help`).";

/// A parsed `--shape`.
type Shape = Vec<usize>;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fill {
    /// All zeros.
    Zeros,
    /// 0, 1, 2, … in C order (like np.arange(n).reshape(shape)).
    Arange,
}

fn main() -> ExitCode {
    let mut out = Out::new();
    let result = match Cli::try_parse() {
        Ok(cli) => run(cli.command, &mut out),
        // --help and --version: through `out`, so that `ndshm --help | head -1` and
        // `ndshm --help > /dev/full` behave as any other output.
        Err(e) if !e.use_stderr() => out.help(&e.render()),
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let result = result.and_then(|()| out.finish());
    match result {
        Ok(()) | Err(Failure::BrokenPipe) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            report_error(&message);
            ExitCode::FAILURE
        }
        Err(Failure::Reported) => ExitCode::FAILURE,
    }
}

fn run(command: Command, out: &mut Out) -> Result<(), Failure> {
    match command {
        Command::Create {
            name,
            dtype,
            shape,
            fill,
            mode,
            fortran,
        } => {
            let dtype = DType::from_descr(&dtype)?;
            let opts = CreateOptions::named(&name)
                .persistent(true)
                .mode(mode)
                .fortran_order(fortran);
            create(dtype, &shape, fill, &opts)?;
            outln!(out, "{}", ndshm::validate_name(&name)?)
        }
        Command::Info { name, json } => {
            let info = ndshm::info(&name)?;
            if json {
                out.json(&segment_json(&info))
            } else {
                print_info(out, &info)
            }
        }
        Command::Ls { bytes, json } => ls(out, bytes, json),
        Command::Gc {
            dry_run,
            prefix,
            json,
        } => gc(out, dry_run, prefix.as_deref(), json),
        Command::Dump { name } => {
            let array = open_read_only(&name)?;
            outln!(out, "{array}")
        }
        Command::Rm { names, force } => rm(&names, force),
        Command::Load { name, file } => {
            check_npy_file(&file)?;
            let opts = CreateOptions::named(&name).persistent(true);
            let array = DynSharedArray::load(opts, &file).map_err(|e| file_error(e, &file))?;
            outln!(out, "{}", array.name())
        }
        Command::Save { name, file } => {
            let array = open_read_only(&name)?;
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(Failure::Error(format!(
                        "directory not found: {} (cannot write {})",
                        dir.display(),
                        file.display()
                    )));
                }
            }
            array.save(&file).map_err(|e| file_error(e, &file))
        }
    }
}

/// Attaches read-only for `dump` and `save`. A segment that is not an array is described by
/// `ndshm::info`, which says what it is in the CLI's words (the attach error may suggest a
/// Rust API).
fn open_read_only(name: &str) -> Result<DynSharedArray<ndshm::ReadOnly>, Failure> {
    // SAFETY: the CLI only reads, through a copy it prints or saves at once (`save` copies
    // with pread); a concurrent writer can at worst make that snapshot inconsistent, which
    // the user who dumps or saves a segment being written accepts.
    match unsafe { DynSharedArray::open_read_only(name) } {
        Ok(array) => Ok(array),
        Err(e) if e.kind() == ErrorKind::InvalidHeader => match ndshm::info(name) {
            Err(described) => Err(described.into()),
            Ok(_) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// Errors about a file on `load`/`save`: a missing file is "file not found: PATH" (the
/// library's `NotFound` kind reads "segment not found", which would point at the segment).
fn file_error(err: ndshm::Error, file: &Path) -> Failure {
    if err.kind() == ErrorKind::NotFound {
        Failure::Error(format!("file not found: {}", file.display()))
    } else {
        err.into()
    }
}

/// Before `load`: the file exists, is a regular file, and starts like a .npy file.
fn check_npy_file(file: &Path) -> Result<(), Failure> {
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::Error(format!(
                "file not found: {}",
                file.display()
            )))
        }
        Err(e) => {
            return Err(Failure::Error(format!(
                "cannot open {}: {e}",
                file.display()
            )))
        }
    };
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Failure::Error(format!(
            "{} is a directory, not a .npy file",
            file.display()
        )));
    }
    let mut magic = [0u8; 6];
    let mut got = 0;
    while got < magic.len() {
        match f.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(Failure::Error(format!(
                    "cannot read {}: {e}",
                    file.display()
                )))
            }
        }
    }
    if &magic[..got] != b"\x93NUMPY" {
        return Err(Failure::Error(format!(
            "{} is not a .npy file: it does not start with the magic bytes \\x93NUMPY \
             (write it with numpy.save, or `ndshm save`)",
            file.display()
        )));
    }
    Ok(())
}

fn ls(out: &mut Out, raw_bytes: bool, json: bool) -> Result<(), Failure> {
    let all = ndshm::list()?;
    if json {
        return out.json(&all.iter().map(segment_json).collect());
    }
    let size = |b: u64| {
        if raw_bytes {
            b.to_string()
        } else {
            human_size(b)
        }
    };
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.kind.map_or("npy", |k| k.as_str()).to_string(),
                i.dtype.map_or("-".to_string(), |d| d.to_string()),
                shape_text(i),
                size(i.bytes),
                i.layout().to_string(),
                i.owner_pid.to_string(),
                alive_text(i).to_string(),
                yes_no(i.persistent).to_string(),
                yes_no(i.is_stale()).to_string(),
                owner_note(i).unwrap_or_default(),
            ]
        })
        .collect();
    use Align::{Left as L, Right as R};
    let header = [
        "NAME",
        "KIND",
        "DTYPE",
        "SHAPE",
        if raw_bytes { "BYTES" } else { "SIZE" },
        "LAYOUT",
        "OWNER",
        "ALIVE",
        "PERSISTENT",
        "STALE",
        "NOTE",
    ];
    for line in table(&header, &[L, L, L, L, R, L, R, L, L, L, L], &rows) {
        outln!(out, "{line}")?;
    }
    let total: u64 = all.iter().map(|i| i.bytes).sum();
    let stale = all.iter().filter(|i| i.is_stale()).count();
    outln!(
        out,
        "total: {} segment{}, {}{}",
        all.len(),
        if all.len() == 1 { "" } else { "s" },
        if raw_bytes {
            format!("{total} bytes")
        } else {
            human_size(total)
        },
        if stale > 0 {
            format!(" ({stale} stale: `ndshm gc` removes them)")
        } else {
            String::new()
        }
    )
}

fn gc(out: &mut Out, dry_run: bool, prefix: Option<&str>, json: bool) -> Result<(), Failure> {
    let wanted = |i: &SegmentInfo| prefix.is_none_or(|p| i.name.starts_with(p));
    let list: Vec<SegmentInfo> = if dry_run {
        ndshm::stale()?.into_iter().filter(|i| wanted(i)).collect()
    } else {
        ndshm::gc_matching(wanted)?
    };
    // Segments that might look abandoned from here, and why they are left.
    let left: Vec<(String, String)> = ndshm::list()?
        .into_iter()
        .filter(|i| wanted(i) && !i.persistent)
        .filter_map(|i| owner_note(&i).map(|note| (i.name, note)))
        .collect();
    if json {
        return out.json(&json!({
            "dry_run": dry_run,
            "segments": list.iter().map(segment_json).collect::<Vec<_>>(),
            "left": left
                .iter()
                .map(|(name, note)| json!({ "name": name, "note": note }))
                .collect::<Vec<_>>(),
        }));
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for i in &list {
        outln!(
            out,
            "{verb} {} ({} {}, {}, owner pid {} is gone)",
            i.name,
            i.kind.map_or("npy", |k| k.as_str()),
            shape_text(i),
            human_size(i.bytes),
            i.owner_pid
        )?;
    }
    for (name, note) in &left {
        outln!(out, "left {name}: {note}")?;
    }
    let total: u64 = list.iter().map(|i| i.bytes).sum();
    outln!(
        out,
        "{verb} {} stale segment(s), {}",
        list.len(),
        human_size(total)
    )
}

/// Removes every name it can; prints one error per name it could not remove.
fn rm(names: &[String], force: bool) -> Result<(), Failure> {
    let mut failed = false;
    for name in names {
        let removed = if force {
            ndshm::unlink(name).map_err(Failure::from)
        } else {
            check_removable(name).and_then(|()| ndshm::unlink(name).map_err(Failure::from))
        };
        match removed {
            Ok(()) => {}
            Err(Failure::Error(message)) => {
                report_error(&message);
                failed = true;
            }
            Err(other) => return Err(other),
        }
    }
    if failed {
        Err(Failure::Reported)
    } else {
        Ok(())
    }
}

/// Whether `rm` without `--force` may remove `name`: an ndshm segment whose owner is known
/// to be gone, or a plain .npy file. Says what the segment is otherwise.
fn check_removable(name: &str) -> Result<(), Failure> {
    let info = match ndshm::info(name) {
        Ok(info) => info,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(e.into()),
        Err(e) if e.kind() == ErrorKind::PermissionDenied => {
            return Err(Failure::Error(format!(
                "'{name}' left alone: cannot tell what it is ({e}); use --force to remove it \
                 anyway"
            )))
        }
        Err(e) => {
            return Err(Failure::Error(format!(
                "'{name}' left alone: it is not an ndshm segment ({}); use --force to remove \
                 it anyway",
                e.message()
            )))
        }
    };
    let Some(kind) = info.kind else {
        return Ok(()); // a plain .npy file: an array without an owner
    };
    match info.owner_status {
        OwnerStatus::Dead => Ok(()),
        OwnerStatus::Alive => Err(Failure::Error(format!(
            "'{name}' left alone: it is an ndshm {kind} in use, its owner (pid {}) is {}; \
             removing it now would hide it from processes that open it later. Use --force to \
             remove it anyway",
            info.owner_pid,
            info.owner_text()
        ))),
        _ => Err(Failure::Error(format!(
            "'{name}' left alone: it is an ndshm {kind} whose owner (pid {}) cannot be checked \
             (its lease is unreadable), so it may be in use. Use --force to remove it anyway",
            info.owner_pid
        ))),
    }
}

fn print_info(out: &mut Out, i: &SegmentInfo) -> Result<(), Failure> {
    outln!(out, "name:       {}", i.name)?;
    outln!(
        out,
        "kind:       {}",
        i.kind.map_or("npy (no ndshm trailer)", |k| k.as_str())
    )?;
    if let Some(d) = i.dtype {
        outln!(
            out,
            "dtype:      {} ({}, numpy {}{})",
            d,
            d.rust_name(),
            d.descr(),
            d.typecode()
                .map_or(String::new(), |c| format!(", python '{c}'"))
        )?;
    }
    outln!(out, "shape:      {}", shape_text(i))?;
    outln!(out, "bytes:      {} ({})", i.bytes, human_size(i.bytes))?;
    outln!(out, "layout:     {}", i.layout())?;
    outln!(out, "owner pid:  {}", i.owner_pid)?;
    if i.kind.is_some() {
        let alive = match i.owner_status {
            OwnerStatus::Alive if i.owner_in_other_pid_namespace => {
                format!("yes, in another pid namespace (pid {} there)", i.owner_pid)
            }
            _ => alive_text(i).to_string(),
        };
        outln!(out, "alive:      {alive}")?;
    } else {
        outln!(out, "alive:      {}", yes_no(i.owner_alive))?;
    }
    outln!(out, "persistent: {}", yes_no(i.persistent))?;
    outln!(out, "mode:       {:o} (uid {})", i.mode, i.uid)?;
    outln!(out, "id:         {:016x}", i.segment_id)
}

fn create(dtype: DType, shape: &[usize], fill: Fill, opts: &CreateOptions) -> Result<(), Failure> {
    fn typed<T: Element>(shape: &[usize], fill: Fill, opts: &CreateOptions) -> ndshm::Result<()> {
        let mut a = SharedNdArray::<T, IxDyn>::zeros(opts, IxDyn(shape))?;
        if let Fill::Arange = fill {
            for (i, x) in a.view_mut().iter_mut().enumerate() {
                *x = T::from_f64(i as f64);
            }
        }
        Ok(())
    }
    Ok(match dtype {
        DType::I8 => typed::<i8>(shape, fill, opts),
        DType::U8 => typed::<u8>(shape, fill, opts),
        DType::I16 => typed::<i16>(shape, fill, opts),
        DType::U16 => typed::<u16>(shape, fill, opts),
        DType::I32 => typed::<i32>(shape, fill, opts),
        DType::U32 => typed::<u32>(shape, fill, opts),
        DType::I64 => typed::<i64>(shape, fill, opts),
        DType::U64 => typed::<u64>(shape, fill, opts),
        DType::F32 => typed::<f32>(shape, fill, opts),
        DType::F64 => typed::<f64>(shape, fill, opts),
        DType::C64 => typed::<num_complex::Complex32>(shape, fill, opts),
        DType::C128 => typed::<num_complex::Complex64>(shape, fill, opts),
        other => return Err(format!("dtype {other} is not supported by create").into()),
    }?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_argument_definitions_are_consistent() {
        Cli::command().debug_assert();
    }
}
