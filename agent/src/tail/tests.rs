//! The tailer end to end on real files: checkpoints of vanished files.

use std::io::Write;

use super::*;
use crate::buffer::BufferOptions;
use crate::config::WhenFull;

#[test]
fn checkpoints_of_vanished_files_are_forgotten_and_live_ones_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    let live = logs.join("live.log");
    std::fs::File::create(&live)
        .and_then(|mut f| f.write_all(b"one\n"))
        .expect("write");
    let live_key = FileId::of(&std::fs::metadata(&live).expect("meta")).key();
    let cp = |path: &Path, offset| {
        serde_json::to_vec(&Checkpoint {
            path: path.display().to_string(),
            offset,
            fp: 0,
            fp_len: 0,
        })
        .expect("json")
    };
    let buffer_dir = dir.path().join("buffer");
    let opts = || BufferOptions::new(1 << 20, WhenFull::Block);
    let (buffer, _) = DiskBuffer::open(&buffer_dir, opts()).expect("open");
    buffer
        .append(
            Kind::Logs,
            vec![
                ("file:1:999999999".into(), cp(&logs.join("deleted.log"), 10)),
                (live_key.clone(), cp(&live, 0)),
            ],
            Bytes::new(),
        )
        .expect("append");
    drop(buffer);
    let (buffer, recovered) = DiskBuffer::open(&buffer_dir, opts()).expect("reopen");
    let source: LogSource =
        toml::from_str(&format!("include = [{:?}]", logs.join("*.log").display().to_string())).expect("source");
    let host = HostResource::detect(&Default::default());
    let mut tailer = Tailer::new(
        &[source],
        &host,
        recovered.checkpoints,
        Arc::clone(&buffer),
        BatchConfig::default(),
        Arc::new(AgentMetrics::new()),
    )
    .expect("tailer");
    tailer.discover().expect("discover");
    tailer.forget_vanished().expect("gc");
    tailer.committer.finish().expect("committed");
    drop(tailer);
    drop(buffer);
    let (_, recovered) = DiskBuffer::open(&buffer_dir, opts()).expect("reopen");
    assert!(
        !recovered.checkpoints.contains_key("file:1:999999999"),
        "the deleted file is forgotten"
    );
    assert!(
        recovered.checkpoints.contains_key(&live_key),
        "the live file keeps its offset"
    );
}
