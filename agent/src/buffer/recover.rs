//! Opening the buffer after any kind of stop: the acknowledged sequence and the checkpoint
//! snapshot read back, every segment scanned (a torn last record truncated, a damaged rest
//! skipped), and the checkpoint entries of the surviving records merged over the snapshot.

use super::*;

impl DiskBuffer {
    /// Opens (or creates) the buffer in `dir`, recovering after any kind of stop.
    pub fn open(dir: &Path, opts: BufferOptions) -> Result<(Arc<DiskBuffer>, Recovered), BufferError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut recovered = Recovered::default();
        let acked_path = dir.join(ACKED_FILE);
        let acked: u64 = match fs::read_to_string(&acked_path) {
            Ok(s) => s.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&acked_path)(e)),
        };
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot: Snapshot = match fs::read(&snapshot_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| io_err(&snapshot_path)(io::Error::new(io::ErrorKind::InvalidData, e)))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(io_err(&snapshot_path)(e)),
        };
        let mut checkpoints: BTreeMap<String, Vec<u8>> =
            snapshot.entries.into_iter().map(|(k, v)| (k, v.into_bytes())).collect();

        let mut firsts: Vec<u64> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".seg").and_then(|s| s.parse().ok())
            })
            .collect();
        firsts.sort_unstable();

        let mut segments = VecDeque::new();
        let mut stats = BufferStats::default();
        let mut sizes = VecDeque::new();
        let mut next_seq = acked.max(snapshot.upto_seq) + 1;
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let is_last = i + 1 == count;
            let file = File::open(&path).map_err(io_err(&path))?;
            let mut reader = BufReader::new(file);
            let mut good = 0u64;
            let mut last_seq = first.saturating_sub(1);
            loop {
                match segment::read_record(&mut reader).map_err(io_err(&path))? {
                    Ok(Some((record, used))) => {
                        if record.seq != last_seq + 1 && good > 0 {
                            recovered
                                .truncated
                                .push(format!("{}: sequence gap at byte {good}", path.display()));
                            break;
                        }
                        last_seq = record.seq;
                        good += used as u64;
                        if record.seq > snapshot.upto_seq {
                            merge(&mut checkpoints, &record.entries);
                        }
                        if record.seq > acked {
                            stats.pending_records += 1;
                            stats.pending_bytes += used as u64;
                            sizes.push_back(used as u32);
                        }
                    }
                    Ok(None) => break,
                    Err(torn) => {
                        recovered
                            .truncated
                            .push(format!("{}: {torn:?} at byte {good}", path.display()));
                        break;
                    }
                }
            }
            let len = fs::metadata(&path).map_err(io_err(&path))?.len();
            if good < len && is_last {
                // A torn tail from a crash mid-append: never acknowledged, cut it off.
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(good).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            next_seq = next_seq.max(last_seq + 1);
            segments.push_back(SegmentInfo {
                first_seq: first,
                last_seq,
                bytes: good,
                path,
            });
        }
        // Sequence numbers must continue past everything ever acknowledged.
        let active = match segments.back() {
            Some(last) if last.last_seq + 1 == next_seq && last.bytes < opts.segment_bytes => OpenOptions::new()
                .append(true)
                .open(&last.path)
                .map_err(io_err(&last.path))?,
            _ => {
                let path = segment_path(dir, next_seq);
                let f = create_segment(dir, &path)?;
                segments.push_back(SegmentInfo {
                    first_seq: next_seq,
                    last_seq: next_seq - 1,
                    bytes: 0,
                    path,
                });
                f
            }
        };
        recovered.checkpoints = checkpoints.clone();
        recovered.pending_records = stats.pending_records;
        recovered.pending_bytes = stats.pending_bytes;
        let buffer = Arc::new(DiskBuffer {
            inner: Mutex::new(Inner {
                dir: dir.to_path_buf(),
                opts,
                segments,
                active,
                next_seq,
                durable: next_seq - 1,
                acked: acked.min(next_seq - 1),
                checkpoints,
                recent: VecDeque::new(),
                recent_bytes: 0,
                sizes,
                cursor: None,
                stats,
            }),
            space: Condvar::new(),
            data: tokio::sync::Notify::new(),
            closed: AtomicBool::new(false),
        });
        buffer.lock().delete_acked_segments()?;
        Ok((buffer, recovered))
    }
}

pub(super) fn merge(checkpoints: &mut BTreeMap<String, Vec<u8>>, entries: &[Entry]) {
    for (k, v) in entries {
        if v.is_empty() {
            checkpoints.remove(k);
        } else {
            checkpoints.insert(k.clone(), v.clone());
        }
    }
}
