//! `vigil-eval`: runs the product's default detectors on benchmark input.
//!
//! `vigil-eval patterns` reads message bodies on stdin, one per line, and prints one
//! line per input: `<pattern id>\t<template>` (the template as it stands after the
//! whole input, so every line of a group shows the same final template).

use std::io::{self, BufRead, BufWriter, Write};
use std::process::ExitCode;

use vigil_detectors::patterns::PatternMiner;

fn patterns() -> io::Result<()> {
    let mut miner = PatternMiner::default();
    let mut ids = Vec::new();
    let mut stdin = io::stdin().lock();
    let mut buf = Vec::new();
    let mut i: i64 = 0;
    loop {
        buf.clear();
        if stdin.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        // Lossy: a stray byte still gives one output line per input line.
        let line = String::from_utf8_lossy(&buf);
        ids.push(miner.add(line.trim_end_matches(['\n', '\r']), i).pattern_id);
        i += 1;
    }
    let mut out = BufWriter::new(io::stdout().lock());
    for id in ids {
        let template = miner.get(id).map(|p| p.template()).unwrap_or_default();
        writeln!(out, "{id}\t{template}")?;
    }
    out.flush()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("patterns") => patterns(),
        _ => {
            eprintln!("usage: vigil-eval patterns < messages.txt");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-eval: {e}");
            ExitCode::FAILURE
        }
    }
}
