//! Pattern-miner throughput on one core, against a baseline measured in the same run:
//! the bare cost of splitting the same lines on whitespace and hashing every token.
//!
//! Run: `cargo bench -p vigil-detectors --bench patterns` (BENCH_LINES, default 2 M;
//! BENCH_WORD_HOSTS=N puts one of N host names made of words before every line, which the
//! miner has to learn are variables: the path that merges patterns).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use vigil_detectors::PatternMiner;

const TEMPLATES: [&str; 12] = [
    "PacketResponder {} for block blk_{} terminating",
    "Received block blk_{} of size {} from /10.250.{}.{}",
    "10.11.10.1 \"GET /v2/{}/servers/detail HTTP/1.1\" status: 200 len: {} time: {}",
    "[instance: {}] VM Started (Lifecycle Event)",
    "session opened for user {} by (uid={})",
    "connection reset by peer after {} ms (attempt {})",
    "payment authorization failed for order {}: card declined (code {})",
    "GC pause young generation {} ms, heap {} MB",
    "cache miss for key session:{} after {} ms",
    "Starting task {} in stage {} (TID {}, executor {})",
    "Got assigned task {}",
    "slow query: SELECT * FROM items WHERE id = {} took {} ms",
];

fn lines(n: usize, hosts: u64) -> Vec<String> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let mut line = TEMPLATES[(next() % TEMPLATES.len() as u64) as usize].to_string();
            while line.contains("{}") {
                line = line.replacen("{}", &(next() % 1_000_000).to_string(), 1);
            }
            if hosts > 0 {
                // Letters only: "web-" and the host's number spelt in base 26.
                let mut h = next() % hosts;
                let mut name = String::from("web-");
                loop {
                    name.push((b'a' + (h % 26) as u8) as char);
                    h /= 26;
                    if h == 0 {
                        break;
                    }
                }
                line = format!("{name} {line}");
            }
            line
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let hosts: u64 = std::env::var("BENCH_WORD_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let input = lines(n, hosts);
    let mb = input.iter().map(|l| l.len() + 1).sum::<usize>() as f64 / 1e6;

    let started = Instant::now();
    let mut sink = 0u64;
    for line in &input {
        for token in line.split_whitespace() {
            let mut h = DefaultHasher::new();
            token.hash(&mut h);
            sink ^= h.finish();
        }
    }
    let baseline = started.elapsed().as_secs_f64();

    let mut miner = PatternMiner::default();
    let started = Instant::now();
    for (i, line) in input.iter().enumerate() {
        sink ^= miner.add(line, i as i64).pattern_id;
    }
    let mined = started.elapsed().as_secs_f64();

    println!("pattern miner, {n} lines ({mb:.0} MB), one thread (checksum {sink:x}):");
    println!(
        "  baseline (split + hash tokens): {:>12.0} lines/s",
        n as f64 / baseline
    );
    println!(
        "  miner (mask, bucket, match)   : {:>12.0} lines/s  {:.1} MB/s  = {:.2}x the baseline time",
        n as f64 / mined,
        mb / mined,
        mined / baseline
    );
    println!("  patterns: {} (word hosts: {hosts})", miner.len());
}
