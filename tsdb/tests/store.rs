//! The store through its public API, on real files: selections, late writes, retention,
//! and recovery after a crash with the WAL replayed from the floor the store gave.

use std::collections::BTreeMap;

use vigil_tsdb::{CHUNK_SAMPLES, Labels, Matcher, Sample, Tsdb};

const DAY: i64 = 86_400_000;

fn cpu(host: &str, mode: &str) -> Labels {
    Labels::new([("__name__", "cpu_seconds_total"), ("host", host), ("mode", mode)])
}

fn eq(name: &str, value: &str) -> Matcher {
    Matcher::Equal(name.into(), value.into())
}

#[test]
fn selections_match_labels_and_join_a_series_across_days() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    let start = 20_000 * DAY - 10 * 60_000;
    let mut lsn = 0;
    for i in 0..40i64 {
        lsn += 1;
        for (host, mode) in [("a", "idle"), ("a", "user"), ("b", "idle")] {
            db.append(lsn, &cpu(host, mode), start + i * 30_000, i as f64)
                .expect("append");
        }
    }
    let all = db
        .select(&[eq("__name__", "cpu_seconds_total")], i64::MIN, i64::MAX, usize::MAX)
        .expect("select")
        .series;
    assert_eq!(all.len(), 3);
    let a_idle = &all[0];
    assert_eq!(a_idle.labels, cpu("a", "idle"));
    // Ten minutes before midnight and ten after: two blocks, one series.
    assert_eq!(db.stats().blocks, 2);
    assert_eq!(a_idle.samples.len(), 40);
    assert!(a_idle.samples.windows(2).all(|w| w[0].0 < w[1].0));

    let idle = db
        .select(
            &[eq("mode", "idle"), Matcher::regex("host", "a|c").expect("re")],
            start,
            start + 60_000,
            usize::MAX,
        )
        .expect("select")
        .series;
    assert_eq!(idle.len(), 1);
    assert_eq!(
        idle[0].samples,
        vec![(start, 0.0), (start + 30_000, 1.0), (start + 60_000, 2.0)]
    );

    let not_a = db
        .select(
            &[Matcher::NotEqual("host".into(), "a".into())],
            start,
            start,
            usize::MAX,
        )
        .expect("select")
        .series;
    assert_eq!(
        not_a.iter().map(|s| s.labels.get("host")).collect::<Vec<_>>(),
        vec![Some("b")]
    );
    assert!(
        db.select(&[eq("__name__", "nope")], i64::MIN, i64::MAX, usize::MAX)
            .expect("select")
            .series
            .is_empty()
    );
    assert!(
        db.select(&[eq("host", "a")], start - 2 * DAY, start - DAY, usize::MAX)
            .expect("select")
            .series
            .is_empty()
    );

    // A selection past its sample budget says so instead of answering with part of it.
    let capped = db.select(&[], i64::MIN, i64::MAX, 100).expect("select");
    assert!(capped.truncated && capped.series.is_empty());
    assert!(!db.select(&[], i64::MIN, i64::MAX, 120).expect("select").truncated);
    assert_eq!(
        db.series_labels(&[eq("host", "a")], start, start),
        vec![cpu("a", "idle"), cpu("a", "user")]
    );

    assert_eq!(
        db.label_values("mode", start, start).into_iter().collect::<Vec<_>>(),
        vec!["idle", "user"]
    );
    assert!(db.label_names(start, start).contains("host"));
}

#[test]
fn a_late_write_into_a_sealed_range_is_merged_and_the_later_write_wins() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    let s = cpu("a", "user");
    let n = CHUNK_SAMPLES as i64 + 10;
    for i in 0..n {
        db.append(i as u64 + 1, &s, i * 1000, i as f64).expect("append");
    }
    assert!(db.stats().chunks >= 1, "the first chunk is sealed");
    // Late: one rewrite inside the sealed chunk and one new point between two old ones.
    db.append(n as u64 + 1, &s, 5_000, -5.0).expect("append");
    db.append(n as u64 + 1, &s, 5_500, 5.5).expect("append");
    db.seal_all_heads().expect("seal");
    let got = &db
        .select(&[eq("host", "a")], 4_000, 6_000, usize::MAX)
        .expect("select")
        .series[0]
        .samples;
    assert_eq!(got, &vec![(4_000, 4.0), (5_000, -5.0), (5_500, 5.5), (6_000, 6.0)]);
}

#[test]
fn retention_drops_whole_days() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    for day in 0..3 {
        db.append(day as u64 + 1, &cpu("a", "idle"), day * DAY, 1.0)
            .expect("append");
    }
    assert_eq!(db.days(), vec![0, 1, 2]);
    for day in [0, 1] {
        assert!(db.drop_day(day).expect("drop"));
    }
    assert!(!db.drop_day(0).expect("drop"), "a day already gone");
    let left = db.select(&[], i64::MIN, i64::MAX, usize::MAX).expect("select").series;
    assert_eq!(left[0].samples, vec![(2 * DAY, 1.0)]);
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
}

/// A WAL entry: samples, or a purge of one host's series.
enum Entry {
    Samples(Vec<(Labels, Sample)>),
    Purge(String),
}

/// Entries 1..=n: each carries one sample of hosts h0..h3 at `lsn` seconds. Some of h0's
/// come nearly a minute late (never on a timestamp another sample has, so every sample must
/// be stored exactly once); h3 is quiet between entries 300 and 400 (its head goes idle);
/// entry 350 purges h2, which goes on after it as a new series.
fn entries(n: u64) -> Vec<(u64, Entry)> {
    (1..=n)
        .map(|lsn| {
            if lsn == 350 {
                return (lsn, Entry::Purge("h2".into()));
            }
            let samples = (0..4)
                .filter(|&s| s != 3 || !(300..400).contains(&lsn))
                .map(|s| {
                    let late = if s == 0 && lsn % 7 == 0 { 59_500 } else { 0 };
                    let t = lsn as i64 * 1000 - late;
                    (cpu(&format!("h{s}"), "user"), (t, (lsn * 3 + s) as f64))
                })
                .collect();
            (lsn, Entry::Samples(samples))
        })
        .collect()
}

fn apply(db: &Tsdb, lsn: u64, entry: &Entry) -> usize {
    match entry {
        Entry::Samples(samples) => samples
            .iter()
            .filter(|(labels, (t, v))| !db.append(lsn, labels, *t, *v).expect("append"))
            .count(),
        Entry::Purge(host) => {
            db.delete(lsn, &|l: &Labels| l.get("host") == Some(host.as_str()))
                .expect("delete");
            0
        }
    }
}

fn expected(all: &[(u64, Entry)]) -> BTreeMap<Labels, BTreeMap<i64, f64>> {
    let mut out: BTreeMap<Labels, BTreeMap<i64, f64>> = BTreeMap::new();
    for (_, entry) in all {
        match entry {
            Entry::Samples(samples) => {
                for (labels, (t, v)) in samples {
                    out.entry(labels.clone()).or_default().insert(*t, *v);
                }
            }
            Entry::Purge(host) => out.retain(|l, _| l.get("host") != Some(host.as_str())),
        }
    }
    out
}

fn stored(db: &Tsdb) -> BTreeMap<Labels, BTreeMap<i64, f64>> {
    db.select(&[], i64::MIN, i64::MAX, usize::MAX)
        .expect("select")
        .series
        .into_iter()
        .map(|s| (s.labels, s.samples.into_iter().collect()))
        .collect()
}

fn assert_exactly(db: &Tsdb, want: &BTreeMap<Labels, BTreeMap<i64, f64>>, case: &str) {
    assert_eq!(&stored(db), want, "{case}");
    // Once each: a sample replayed into a head while a chunk holds it would be merged
    // away by a selection, but would be stored twice.
    let stats = db.stats();
    let distinct: usize = want.values().map(BTreeMap::len).sum();
    assert_eq!(stats.chunk_samples + stats.head_samples, distinct, "{case}");
}

#[test]
fn after_a_crash_replaying_the_wal_from_the_floor_restores_every_sample_once() {
    let all = entries(700);
    // Crash after entry 530, the last maintenance at 500: what was written after it may be
    // lost, in part or whole (a torn record).
    for lost_tail in [0u64, 1, 7, 100, u64::MAX] {
        let dir = tempfile::tempdir().expect("dir");
        let chunks = dir.path().join("0").join("chunks.log");
        let (floor, synced_len) = {
            let db = Tsdb::open(dir.path()).expect("open");
            let mut floor = 1;
            let mut synced_len = 0;
            for (lsn, entry) in &all[..530] {
                apply(&db, *lsn, entry);
                if lsn % 50 == 0 && *lsn <= 500 {
                    // What the collector does between entries: seal the quiet series'
                    // heads, snapshot the rest, and let the WAL go up to the floor.
                    db.seal_idle_heads(lsn - 30).expect("seal");
                    db.snapshot_heads(*lsn).expect("snapshot");
                    floor = db.wal_floor().unwrap_or(lsn + 1);
                    synced_len = std::fs::metadata(&chunks).expect("meta").len();
                }
            }
            // Written after the last sync, never synced.
            db.seal_all_heads().expect("seal");
            (floor, synced_len)
        };
        assert!(floor > 400, "snapshots let the WAL go: floor {floor}");
        let len = std::fs::metadata(&chunks).expect("meta").len();
        let keep = len.saturating_sub(lost_tail).max(synced_len);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&chunks)
            .expect("open")
            .set_len(keep)
            .expect("cut");

        let db = Tsdb::open(dir.path()).expect("reopen");
        // The WAL drops whole segments: the replay starts at or before the floor.
        let from = floor.saturating_sub(120);
        let skipped: usize = all
            .iter()
            .filter(|(lsn, _)| *lsn >= from)
            .map(|(lsn, e)| apply(&db, *lsn, e))
            .sum();
        assert_exactly(&db, &expected(&all), &format!("tail cut by {lost_tail}"));
        if lost_tail == 0 {
            assert!(skipped > 0, "entries the chunks hold are skipped on replay");
        }
    }
}

#[test]
fn a_purge_replayed_after_a_crash_deletes_only_what_came_before_it() {
    let all: Vec<(u64, Entry)> = (1..=20u64)
        .map(|lsn| match lsn {
            11 => (lsn, Entry::Purge("h2".into())),
            _ => (
                lsn,
                Entry::Samples(vec![(cpu("h2", "user"), (lsn as i64 * 1000, lsn as f64))]),
            ),
        })
        .collect();
    let dir = tempfile::tempdir().expect("dir");
    {
        let db = Tsdb::open(dir.path()).expect("open");
        for (lsn, entry) in &all {
            apply(&db, *lsn, entry);
        }
        let want = expected(&all);
        assert_exactly(&db, &want, "before the crash");
        // The deleted samples need no WAL; the deletion and what came after it do.
        assert_eq!(db.wal_floor(), Some(11));
        // Then the series after the purge is sealed and synced: only its chunk has it.
        db.seal_all_heads().expect("seal");
        db.sync().expect("sync");
        assert_eq!(db.wal_floor(), None);
    }
    // The WAL drops whole segments: the replay may start before the floor, here at entry 1.
    let db = Tsdb::open(dir.path()).expect("reopen");
    for (lsn, entry) in &all {
        apply(&db, *lsn, entry);
    }
    let want = expected(&all);
    assert_eq!(want.values().next().map(BTreeMap::len), Some(9));
    assert_exactly(&db, &want, "after the replay");
}

#[test]
fn a_purged_series_leaves_the_label_listings() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    db.append(1, &cpu("h1", "idle"), 1_000, 1.0).expect("append");
    db.append(2, &cpu("h2", "user"), 1_000, 1.0).expect("append");
    let gone = Labels::new([("__name__", "gone_total"), ("tenant", "acme")]);
    db.append(3, &gone, 1_000, 1.0).expect("append");
    assert!(db.label_names(0, 2_000).contains("tenant"));
    db.delete(4, &|l: &Labels| {
        l.get("host") == Some("h2") || l.get("tenant") == Some("acme")
    })
    .expect("delete");
    let hosts: Vec<String> = db.label_values("host", 0, 2_000).into_iter().collect();
    assert_eq!(hosts, ["h1"]);
    let modes: Vec<String> = db.label_values("mode", 0, 2_000).into_iter().collect();
    assert_eq!(modes, ["idle"]);
    let names: Vec<String> = db.label_values("__name__", 0, 2_000).into_iter().collect();
    assert_eq!(names, ["cpu_seconds_total"]);
    assert!(!db.label_names(0, 2_000).contains("tenant"));
    // The same labels written again after the purge are a live series, listed again.
    db.append(5, &cpu("h2", "user"), 1_500, 2.0).expect("append");
    let hosts: Vec<String> = db.label_values("host", 0, 2_000).into_iter().collect();
    assert_eq!(hosts, ["h1", "h2"]);
}

#[test]
fn the_floor_rises_as_heads_are_snapshotted_sealed_and_synced() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    assert_eq!(db.wal_floor(), None);
    db.append(3, &cpu("a", "idle"), 1_000, 1.0).expect("append");
    db.append(4, &cpu("b", "idle"), 1_000, 1.0).expect("append");
    assert_eq!(db.wal_floor(), Some(3));
    db.seal_idle_heads(4).expect("seal");
    assert_eq!(db.wal_floor(), Some(3), "sealed but not yet synced");
    db.sync().expect("sync");
    assert_eq!(db.wal_floor(), Some(4));
    db.snapshot_heads(4).expect("snapshot");
    assert_eq!(db.wal_floor(), None);
    db.append(5, &cpu("b", "idle"), 2_000, 1.0).expect("append");
    assert_eq!(db.wal_floor(), Some(5), "only what came after the snapshot");
}

#[test]
fn a_chunk_whose_series_record_was_lost_is_cut_like_a_torn_tail() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let db = Tsdb::open(dir.path()).expect("open");
        for lsn in 1..=130u64 {
            db.append(lsn, &cpu("a", "idle"), lsn as i64 * 1000, 1.0)
                .expect("append");
        }
        assert_eq!(db.stats().chunks, 1);
    }
    // A crash before any sync: the chunk file reached the disk, the series file did not.
    let series = dir.path().join("0").join("series.log");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&series)
        .expect("open")
        .set_len(0)
        .expect("cut");
    let db = Tsdb::open(dir.path()).expect("a block missing a series still opens");
    assert!(db.recovered_cut_bytes() > 0);
    assert_eq!(
        db.stats(),
        vigil_tsdb::Stats {
            blocks: 1,
            ..Default::default()
        }
    );
    // The WAL was kept (nothing was synced): the replay puts everything back.
    for lsn in 1..=130u64 {
        assert!(
            db.append(lsn, &cpu("a", "idle"), lsn as i64 * 1000, 1.0)
                .expect("append")
        );
    }
    assert_eq!(stored(&db).values().map(BTreeMap::len).sum::<usize>(), 130);
}

#[test]
fn a_block_half_deleted_by_a_crash_is_removed_at_the_next_open() {
    let dir = tempfile::tempdir().expect("dir");
    let leftover = dir.path().join("7.deleting");
    std::fs::create_dir_all(&leftover).expect("dir");
    std::fs::write(leftover.join("chunks.log"), b"partial").expect("write");
    let db = Tsdb::open(dir.path()).expect("open");
    assert!(!leftover.exists());
    assert_eq!(db.stats().blocks, 0);
    db.append(1, &cpu("a", "idle"), 7 * DAY, 1.0).expect("append");
    assert!(db.drop_day(7).expect("drop"));
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 0);
}

#[test]
fn a_head_filled_to_the_brim_by_one_entry_is_complete_up_to_that_entry() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    let s = cpu("a", "idle");
    let brim = vigil_tsdb::chunk::MAX_SAMPLES as i64;
    for t in 0..brim {
        db.append(1, &s, t, 0.0).expect("append");
    }
    // The next entry seals the full head between entries: entry 1 is whole in the chunk.
    db.append(2, &s, brim, 0.0).expect("append");
    assert!(
        !db.append(1, &s, 0, 0.0).expect("append"),
        "a replay of entry 1 is skipped"
    );
    assert_eq!(db.stats().chunk_samples + db.stats().head_samples, brim as usize + 1);
}

#[test]
fn the_largest_lsn_seen_survives_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let db = Tsdb::open(dir.path()).expect("open");
        db.append(41, &cpu("a", "idle"), 1_000, 1.0).expect("append");
        db.delete(42, &|_| false).expect("delete");
        assert_eq!(db.max_lsn(), 41);
        db.snapshot_heads(42).expect("snapshot");
    }
    assert_eq!(Tsdb::open(dir.path()).expect("open").max_lsn(), 42);
}
