//! `ndshm`: create, inspect, dump, load, save and remove shared-memory arrays.
//!
//! A thin layer over the library: every command calls the public API, errors go to stderr
//! with a non-zero exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use ndarray::IxDyn;
use ndshm::{
    CreateOptions, DType, DynSharedArray, Element, OwnerStatus, SegmentInfo, SharedNdArray,
};

/// Named shared-memory n-d arrays (numpy-compatible segments in /dev/shm).
#[derive(Debug, Parser)]
#[command(name = "ndshm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a persistent array segment and print its name.
    Create {
        /// Segment name (a leading '/' is ignored).
        name: String,
        /// Element type: f8, f4, i8, i4, i2, i1, u8, u4, u2, u1, c8, c16 (or <f8, float64, 'd'…).
        #[arg(long, default_value = "f8")]
        dtype: String,
        /// Shape, comma-separated (e.g. 1000,3); an empty string makes a 0-d array.
        #[arg(long)]
        shape: String,
        /// Initial contents.
        #[arg(long, value_enum, default_value_t = Fill::Zeros)]
        fill: Fill,
        /// Permission bits, in octal.
        #[arg(long, default_value = "600")]
        mode: String,
        /// Lay the array out in Fortran (column-major) order.
        #[arg(long)]
        fortran: bool,
    },
    /// Print dtype, shape, bytes, layout, owner pid and whether the owner is alive.
    Info {
        /// Segment name.
        name: String,
    },
    /// List ndshm segments (stale ones, whose owner died, are marked in the STALE column).
    Ls,
    /// Remove stale segments: ndshm segments whose owner died and that are not persistent.
    /// Never touches a live owner's segment or a file that is not an ndshm segment.
    Gc {
        /// Only print what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Only segments whose name starts with this prefix.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// Print the array (abbreviated for big arrays).
    Dump {
        /// Segment name.
        name: String,
    },
    /// Remove a segment.
    Rm {
        /// Segment names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Copy a .npy file into a new persistent segment.
    Load {
        /// Segment name.
        name: String,
        /// The .npy file.
        file: PathBuf,
    },
    /// Write a segment out as a .npy file.
    Save {
        /// Segment name.
        name: String,
        /// The .npy file to write.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Fill {
    /// All zeros.
    Zeros,
    /// 0, 1, 2, … in C order (like np.arange(n).reshape(shape)).
    Arange,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ndshm: error: {err}");
            ExitCode::FAILURE
        }
    }
}

type CliResult = Result<(), Box<dyn std::error::Error>>;

fn run(command: Command) -> CliResult {
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
            let shape = parse_shape(&shape)?;
            let mode = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
                .map_err(|_| format!("--mode {mode:?} is not an octal number such as 600"))?;
            let opts = CreateOptions::named(&name)
                .persistent(true)
                .mode(mode)
                .fortran_order(fortran);
            create(dtype, &shape, fill, &opts)?;
            println!("{}", ndshm::validate_name(&name)?);
        }
        Command::Info { name } => {
            let info = ndshm::info(&name)?;
            print_info(&info);
        }
        Command::Ls => {
            let all = ndshm::list()?;
            println!(
                "{:<32} {:<6} {:<5} {:<16} {:>12} {:<6} {:>8} {:<7} {:<10} {:<5} NOTE",
                "NAME",
                "KIND",
                "DTYPE",
                "SHAPE",
                "BYTES",
                "LAYOUT",
                "OWNER",
                "ALIVE",
                "PERSISTENT",
                "STALE"
            );
            for i in &all {
                let line = format!(
                    "{:<32} {:<6} {:<5} {:<16} {:>12} {:<6} {:>8} {:<7} {:<10} {:<5} {}",
                    i.name,
                    i.kind.map_or("npy", |k| k.as_str()),
                    i.dtype.map_or("-".to_string(), |d| d.to_string()),
                    shape_text(i),
                    i.bytes,
                    i.layout(),
                    i.owner_pid,
                    alive_text(i),
                    yes_no(i.persistent),
                    yes_no(i.is_stale()),
                    owner_note(i).unwrap_or_default()
                );
                println!("{}", line.trim_end());
            }
        }
        Command::Gc { dry_run, prefix } => {
            let wanted = |i: &SegmentInfo| prefix.as_ref().is_none_or(|p| i.name.starts_with(p));
            let (verb, list) = if dry_run {
                let stale = ndshm::stale()?;
                (
                    "would remove",
                    stale.into_iter().filter(|i| wanted(i)).collect(),
                )
            } else {
                ("removed", ndshm::gc_matching(wanted)?)
            };
            for i in &list {
                println!(
                    "{verb} {} ({} {}, {} bytes, owner pid {} is gone)",
                    i.name,
                    i.kind.map_or("npy", |k| k.as_str()),
                    shape_text(i),
                    i.bytes,
                    i.owner_pid
                );
            }
            // Say why segments that might look abandoned from here are left.
            for i in ndshm::list()?.iter().filter(|i| wanted(i) && !i.persistent) {
                if let Some(note) = owner_note(i) {
                    println!("left {}: {note}", i.name);
                }
            }
            println!("{verb} {} stale segment(s)", list.len());
        }
        Command::Dump { name } => {
            // SAFETY: the CLI only reads, through a copy it prints at once; a concurrent
            // writer can at worst make the printed snapshot inconsistent, which the user
            // who runs `dump` on a segment being written accepts.
            let array = unsafe { DynSharedArray::open_read_only(&name)? };
            println!("{array}");
        }
        Command::Rm { names } => {
            for name in names {
                ndshm::unlink(&name)?;
            }
        }
        Command::Load { name, file } => {
            let array = DynSharedArray::load(CreateOptions::named(&name).persistent(true), &file)?;
            println!("{}", array.name());
        }
        Command::Save { name, file } => {
            // SAFETY: as for `dump`: read-only snapshot (`save` copies it with pread).
            let array = unsafe { DynSharedArray::open_read_only(&name)? };
            array.save(&file)?;
        }
    }
    Ok(())
}

/// The ALIVE column: `yes`, `no` or `unknown`.
fn alive_text(i: &SegmentInfo) -> &'static str {
    match i.owner_status {
        OwnerStatus::Alive => "yes",
        OwnerStatus::Dead => "no",
        _ => "unknown",
    }
}

/// What to say of an owner that is not simply alive here or dead: alive in another pid
/// namespace (its pid is not one of ours), or unknown (never called stale).
fn owner_note(i: &SegmentInfo) -> Option<String> {
    i.kind?;
    match i.owner_status {
        OwnerStatus::Alive if i.owner_in_other_pid_namespace => {
            Some(format!("owner {}", i.owner_text()))
        }
        OwnerStatus::Alive | OwnerStatus::Dead => None,
        _ => Some(
            "owner unknown: its lease cannot be checked, so it is not called stale".to_string(),
        ),
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn shape_text(info: &SegmentInfo) -> String {
    info.shape.as_ref().map_or("-".to_string(), |s| {
        let parts: Vec<String> = s.iter().map(usize::to_string).collect();
        format!("({})", parts.join(","))
    })
}

fn print_info(i: &SegmentInfo) {
    println!("name:       {}", i.name);
    println!(
        "kind:       {}",
        i.kind.map_or("npy (no ndshm trailer)", |k| k.as_str())
    );
    if let Some(d) = i.dtype {
        println!(
            "dtype:      {} ({}, numpy {}{})",
            d,
            d.rust_name(),
            d.descr(),
            d.typecode()
                .map_or(String::new(), |c| format!(", python '{c}'"))
        );
    }
    println!("shape:      {}", shape_text(i));
    println!("bytes:      {}", i.bytes);
    println!("layout:     {}", i.layout());
    println!("owner pid:  {}", i.owner_pid);
    if i.kind.is_some() {
        let alive = match i.owner_status {
            OwnerStatus::Alive if i.owner_in_other_pid_namespace => {
                format!("yes, in another pid namespace (pid {} there)", i.owner_pid)
            }
            _ => alive_text(i).to_string(),
        };
        println!("alive:      {alive}");
    } else {
        println!("alive:      {}", yes_no(i.owner_alive));
    }
    println!("persistent: {}", yes_no(i.persistent));
    println!("mode:       {:o} (uid {})", i.mode, i.uid);
    println!("id:         {:016x}", i.segment_id);
}

fn parse_shape(text: &str) -> Result<Vec<usize>, String> {
    let text = text.trim().trim_start_matches('(').trim_end_matches(')');
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>().map_err(|_| {
                format!("--shape entry {s:?} is not a non-negative integer (use e.g. 1000,3)")
            })
        })
        .collect()
}

fn create(dtype: DType, shape: &[usize], fill: Fill, opts: &CreateOptions) -> CliResult {
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
