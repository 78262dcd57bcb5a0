//! Everything the CLI writes: a buffered, locked stdout whose errors are values (a reader
//! that closed the pipe ends the command quietly, a full disk is an error message), the
//! failure type that `main` turns into an exit code, human-readable sizes, aligned tables
//! and the JSON form of a segment.

use std::fmt;
use std::io::{self, BufWriter, IsTerminal, StdoutLock, Write};

use ndshm::{OwnerStatus, SegmentInfo};
use serde_json::{json, Value};

/// Why a command stopped early.
#[derive(Debug)]
pub enum Failure {
    /// Whoever read our stdout went away (`ndshm ls | head -1`): stop quietly, exit 0, as
    /// `ls`, `cat` or ripgrep do.
    BrokenPipe,
    /// An error: printed as `ndshm: error: MESSAGE`, exit status 1.
    Error(String),
    /// The errors were already printed (one per failed item, as `rm` does): exit status 1.
    Reported,
}

impl From<ndshm::Error> for Failure {
    fn from(err: ndshm::Error) -> Failure {
        Failure::Error(err.to_string())
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Error(message)
    }
}

/// An error writing stdout: EPIPE is the reader's way of saying "enough", anything else
/// (ENOSPC on `> /dev/full`, EIO) is reported.
fn stdout_failure(err: io::Error) -> Failure {
    if err.kind() == io::ErrorKind::BrokenPipe {
        return Failure::BrokenPipe;
    }
    // A lower-case wording of the common write errors, so the message reads "no space left
    // on device" whatever the platform's wording.
    let what = match err.raw_os_error() {
        Some(code @ 28) => format!("no space left on device (os error {code})"),
        Some(code @ 122) => format!("disk quota exceeded (os error {code})"),
        Some(code @ 27) => format!("file too large (os error {code})"),
        _ => err.to_string(),
    };
    Failure::Error(format!("cannot write the output: {what}"))
}

/// Writes one line to the CLI's stdout: `outln!(out, "{x}")?`.
macro_rules! outln {
    ($out:expr) => {
        $out.line(format_args!(""))
    };
    ($out:expr, $($arg:tt)*) => {
        $out.line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// The CLI's stdout: locked once, buffered, every write error a [`Failure`]. Never use
/// `println!` in the CLI: it panics on a closed pipe or a full disk.
pub struct Out {
    w: BufWriter<StdoutLock<'static>>,
}

impl Out {
    pub fn new() -> Out {
        Out {
            w: BufWriter::new(io::stdout().lock()),
        }
    }

    pub fn line(&mut self, args: fmt::Arguments<'_>) -> Result<(), Failure> {
        self.w
            .write_fmt(args)
            .and_then(|()| self.w.write_all(b"\n"))
            .map_err(stdout_failure)
    }

    /// Pretty-printed JSON and a newline.
    pub fn json(&mut self, value: &Value) -> Result<(), Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| Failure::Error(format!("cannot encode JSON: {e}")))?;
        outln!(self, "{text}")
    }

    /// Help or version text from clap, styled when stdout is a terminal.
    pub fn help(&mut self, text: &clap::builder::StyledStr) -> Result<(), Failure> {
        let text = if io::stdout().is_terminal() {
            text.ansi().to_string()
        } else {
            text.to_string()
        };
        self.w.write_all(text.as_bytes()).map_err(stdout_failure)
    }

    /// Flushes what is buffered; a command's output is complete only once this succeeded.
    pub fn finish(mut self) -> Result<(), Failure> {
        self.w.flush().map_err(stdout_failure)
    }
}

/// Prints `ndshm: error: MESSAGE` on stderr (ignoring a stderr that cannot be written).
pub fn report_error(message: &str) {
    let _ = writeln!(io::stderr().lock(), "ndshm: error: {message}");
}

/// `512 B`, `1.5 KiB`, `12.0 MiB`, `3.2 GiB` (powers of 1024).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Column alignment in a [`table`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Lays out `header` and `rows` in columns as wide as their widest cell, two spaces apart;
/// the last column is not padded, and trailing spaces are trimmed.
pub fn table(header: &[&str], align: &[Align], rows: &[Vec<String>]) -> Vec<String> {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    std::iter::once(&header)
        .chain(rows)
        .map(|row| {
            let last = row.len().saturating_sub(1);
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = width[i].saturating_sub(cell.chars().count());
                match align[i] {
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(cell);
                    }
                    Align::Left => {
                        line.push_str(cell);
                        if i != last {
                            line.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
            }
            line.truncate(line.trim_end().len());
            line
        })
        .collect()
}

/// The field list of the JSON objects that describe a segment, for `--help`.
pub const JSON_FIELDS: &str = "\
JSON fields of a segment (stable; new fields may be added):
  name                          segment name (the file /dev/shm/NAME)
  kind                          array, value, lock, queue, pipe, list, map, struct, pool, or
                                npy (a plain .npy file without an ndshm trailer)
  dtype, descr                  element type (f8) and numpy descr (<f8); null if not an array
  shape                         array of lengths; null if not an array
  layout                        \"C\" or \"F\"; null if not an array
  bytes                         size of the segment file in bytes
  owner_pid                     pid of the creating process, in its pid namespace (null: none)
  owner_status                  \"alive\", \"dead\" or \"unknown\" (null: no ndshm trailer)
  owner_in_other_pid_namespace  the owner runs in another pid namespace (container)
  persistent                    outlives its owner
  stale                         gc would remove it (owner dead, not persistent)
  mode                          permission bits, octal, as a string (\"600\")
  uid                           owning user id
  segment_id                    unique id of the segment's creation, 16 hex digits (null: none)";

/// The JSON object of one segment (fields as in [`JSON_FIELDS`]).
pub fn segment_json(i: &SegmentInfo) -> Value {
    let has_trailer = i.kind.is_some();
    json!({
        "name": i.name,
        "kind": i.kind.map_or("npy", |k| k.as_str()),
        "dtype": i.dtype.map(|d| d.to_string()),
        "descr": i.dtype.map(|d| d.descr().to_string()),
        "shape": i.shape,
        "layout": i.dtype.map(|_| i.layout()),
        "bytes": i.bytes,
        "owner_pid": has_trailer.then_some(i.owner_pid),
        "owner_status": has_trailer.then(|| i.owner_status.as_str()),
        "owner_in_other_pid_namespace": i.owner_in_other_pid_namespace,
        "persistent": i.persistent,
        "stale": i.is_stale(),
        "mode": format!("{:o}", i.mode),
        "uid": i.uid,
        "segment_id": has_trailer.then(|| format!("{:016x}", i.segment_id)),
    })
}

/// The ALIVE column: `yes`, `no` or `unknown`.
pub fn alive_text(i: &SegmentInfo) -> &'static str {
    match i.owner_status {
        OwnerStatus::Alive => "yes",
        OwnerStatus::Dead => "no",
        _ => "unknown",
    }
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `(4,3)` for arrays, `-` otherwise.
pub fn shape_text(info: &SegmentInfo) -> String {
    info.shape.as_ref().map_or("-".to_string(), |s| {
        let parts: Vec<String> = s.iter().map(usize::to_string).collect();
        format!("({})", parts.join(","))
    })
}

/// What to say of an owner that is not simply alive here or dead: alive in another pid
/// namespace (its pid is not one of ours), or unknown (never called stale).
pub fn owner_note(i: &SegmentInfo) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_use_powers_of_1024() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(24_000_192), "22.9 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn table_columns_are_as_wide_as_their_widest_cell() {
        let rows = vec![
            vec![
                "a-very-long-name".to_string(),
                "1 B".to_string(),
                "x".to_string(),
            ],
            vec!["b".to_string(), "10.0 KiB".to_string(), String::new()],
        ];
        let lines = table(
            &["NAME", "SIZE", "NOTE"],
            &[Align::Left, Align::Right, Align::Left],
            &rows,
        );
        assert_eq!(
            lines,
            [
                "NAME                  SIZE  NOTE",
                "a-very-long-name       1 B  x",
                "b                 10.0 KiB",
            ]
        );
    }
}
