//! Logs go to stderr (stdout carries data). `RUST_LOG` filters; by default this crate logs at
//! `info` and its dependencies at `warn`.
//!
//! Whatever `RUST_LOG` says, the embedded broker (the `tansu*` targets) logs at most `info`:
//! its `debug` and `trace` events dump requests, responses and record batches, that is event
//! payloads with phone numbers. What it does log passes through [`mask_digits`], because some
//! of its warnings quote the frame they could not decode. This crate masks numbers itself
//! where it logs them ([`crate::privacy`]).

use std::io::{self, IsTerminal, Write};

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

use crate::privacy::mask_digits;

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,dissuade=info"));
    // A `Targets` filter, unlike a closure, lets tracing cache each call site's answer: the
    // broker's many debug spans and events then cost nothing (a closure cost 3-4 % of the
    // demo's CPU).
    let broker_cap = Targets::new()
        .with_default(Level::TRACE)
        .with_target(BROKER, Level::INFO);
    let colour = colours(
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(colour)
        .with_writer(Stderr);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter).with_filter(broker_cap))
        .try_init();
}

/// Whether log lines are coloured: on a terminal only, and not when `NO_COLOR` is set
/// (<https://no-color.org>). Escape codes in a log file or a collector's stream are noise
/// to the tools that read it.
fn colours(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The target prefix of the embedded broker's crates (`tansu_broker`, `tansu_storage`, ...).
const BROKER: &str = "tansu";

fn is_broker(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with(BROKER)
}

/// Standard error, masking digit runs in the broker's lines.
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = Box<dyn Write + 'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Box::new(io::stderr())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        if is_broker(meta) {
            Box::new(Masked(io::stderr()))
        } else {
            Box::new(io::stderr())
        }
    }
}

/// Writes each buffer with its digit runs masked, past the timestamp that starts the line.
/// The formatter writes one event per call.
struct Masked<W>(W);

impl<W: Write> Write for Masked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (time, rest) = text.split_at(text.find(' ').unwrap_or(0));
        self.0.write_all(time.as_bytes())?;
        self.0.write_all(mask_digits(rest).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_lines_keep_no_number() {
        let mut out = Vec::new();
        Masked(&mut out)
            .write_all(
                br#"2026-11-25T12:44:55.410634Z WARN frame=b"{\"callee_number\":\"13912345678\"}""#,
            )
            .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("13912345678"), "{out}");
        assert!(out.contains("139****5678"), "{out}");
        assert!(out.starts_with("2026-11-25T12:44:55.410634Z "), "{out}");
    }

    #[test]
    fn lines_are_coloured_on_a_terminal_unless_no_color_is_set() {
        use std::ffi::OsStr;
        assert!(colours(true, None));
        assert!(colours(true, Some(OsStr::new(""))));
        assert!(!colours(true, Some(OsStr::new("1"))));
        assert!(!colours(false, None));
    }
}
