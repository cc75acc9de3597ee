//! Downsampling through the store's public API, on real files: what a rewritten day keeps,
//! that a WAL replay after it stores nothing twice, that it survives a restart, and that a
//! crash at either point of the swap leaves the day whole.

use std::collections::BTreeMap;
use std::path::Path;

use vigil_tsdb::{Downsampled, Labels, Tsdb};

const DAY: i64 = 86_400_000;
const SCRAPE: i64 = 15_000;
const FIVE_MINUTES: i64 = 300_000;

fn series(host: &str) -> Labels {
    Labels::new([("__name__", "node_cpu_seconds_total"), ("instance", host)])
}

/// Day 7 scraped every 15 s from two hosts, one WAL entry per scrape (LSN = scrape number
/// from 1), and one sample on day 8. Heads are snapshotted half-way, so the day holds both
/// chunks and open heads when it is rewritten. Returns the last LSN used.
fn fill(db: &Tsdb) -> u64 {
    let scrapes = DAY / SCRAPE;
    for n in 0..scrapes {
        let lsn = n as u64 + 1;
        for (i, host) in ["a", "b"].iter().enumerate() {
            db.append(lsn, &series(host), 7 * DAY + n * SCRAPE, value(i, n))
                .expect("append");
        }
        if n == scrapes / 2 {
            db.snapshot_heads(lsn).expect("snapshot");
        }
    }
    let last = scrapes as u64 + 1;
    db.append(last, &series("a"), 8 * DAY, 1.0).expect("append");
    last
}

/// A counter per host that grows by a varying amount each scrape.
fn value(host: usize, n: i64) -> f64 {
    (n * (host as i64 + 1) + n % 7) as f64
}

fn day_samples(db: &Tsdb, day: i64) -> BTreeMap<String, Vec<(i64, f64)>> {
    db.select(&[], day * DAY, (day + 1) * DAY - 1, usize::MAX)
        .expect("select")
        .series
        .into_iter()
        .map(|s| (s.labels.get("instance").unwrap_or_default().to_string(), s.samples))
        .collect()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum()
}

/// The five-minute downsampling of day 7 as the store must hold it: for each host, the
/// last scrape of every five minutes (the one at 4 min 45 s), with its value.
fn assert_five_minute_day(db: &Tsdb) {
    let kept = day_samples(db, 7);
    assert_eq!(kept.len(), 2);
    for (i, host) in ["a", "b"].iter().enumerate() {
        let samples = &kept[*host];
        assert_eq!(samples.len() as i64, DAY / FIVE_MINUTES, "{host}");
        for &(t, v) in samples {
            assert_eq!((t - 7 * DAY) % FIVE_MINUTES, FIVE_MINUTES - SCRAPE, "{host} at {t}");
            assert_eq!(v, value(i, (t - 7 * DAY) / SCRAPE), "{host} at {t}");
        }
    }
}

#[test]
fn a_downsampled_day_keeps_the_last_sample_of_each_step_and_a_replay_adds_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    let last_lsn = fill(&db);
    let full_bytes = dir_bytes(&dir.path().join("7"));

    let done = db.downsample_day(7, FIVE_MINUTES).expect("downsample");
    let per_host = (DAY / SCRAPE) as usize;
    assert_eq!(
        done,
        Some(Downsampled {
            series: 2,
            samples_before: 2 * per_host,
            samples_after: 2 * 288,
        })
    );
    assert_five_minute_day(&db);
    assert_eq!(db.resolution(7), Some(FIVE_MINUTES));
    assert_eq!(db.resolution(8), None, "other days are not touched");
    assert_eq!(day_samples(&db, 8)["a"], vec![(8 * DAY, 1.0)]);
    assert!(
        dir_bytes(&dir.path().join("7")) * 10 < full_bytes,
        "a twentieth of the samples"
    );
    assert_eq!(
        db.downsample_day(7, FIVE_MINUTES).expect("again"),
        None,
        "already at that step"
    );
    assert_eq!(db.downsample_day(7, 60_000).expect("finer"), None, "never finer");
    assert_eq!(db.wal_floor(), Some(last_lsn), "day 7 needs nothing of the WAL");

    // The WAL replayed from the start after a crash: the rewritten day takes none of it.
    for n in 0..DAY / SCRAPE {
        for (i, host) in ["a", "b"].iter().enumerate() {
            let taken = db
                .append(n as u64 + 1, &series(host), 7 * DAY + n * SCRAPE, value(i, n))
                .expect("replay");
            assert!(!taken, "entry {} of {host} is held already", n + 1);
        }
    }
    assert_five_minute_day(&db);

    // A restart reads the rewrite back, resolution included.
    drop(db);
    let db = Tsdb::open(dir.path()).expect("reopen");
    assert_five_minute_day(&db);
    assert_eq!(db.resolution(7), Some(FIVE_MINUTES));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no staging or doomed directory is left: {names:?}");

    // A late write after the rewrite is taken, and a coarser step rewrites again.
    assert!(db.append(last_lsn + 1, &series("c"), 7 * DAY + 1, 5.0).expect("late"));
    let hourly = db.downsample_day(7, 3_600_000).expect("hourly").expect("rewritten");
    assert_eq!((hourly.series, hourly.samples_after), (3, 2 * 24 + 1));
    assert_eq!(
        day_samples(&db, 7)["a"].last(),
        Some(&(8 * DAY - SCRAPE, value(0, DAY / SCRAPE - 1)))
    );
}

#[test]
fn a_purge_before_the_rewrite_stays_a_purge_on_a_replay() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    for n in 0..40 {
        db.append(n as u64 + 1, &series("a"), 7 * DAY + n * SCRAPE, 1.0)
            .expect("append");
    }
    db.delete(41, &|l: &Labels| l.get("instance") == Some("a"))
        .expect("purge");
    db.append(42, &series("b"), 7 * DAY, 2.0).expect("append");
    db.downsample_day(7, FIVE_MINUTES)
        .expect("downsample")
        .expect("rewritten");
    // Replayed, the purged series' entries do not bring it back.
    for n in 0..40 {
        assert!(
            !db.append(n as u64 + 1, &series("a"), 7 * DAY + n * SCRAPE, 1.0)
                .expect("replay")
        );
    }
    assert_eq!(day_samples(&db, 7).keys().collect::<Vec<_>>(), vec!["b"]);
}

/// Copies a block directory (its files only: blocks have no subdirectories).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("ls") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn a_crash_between_the_renames_of_the_swap_leaves_the_rewrite_in_place() {
    // The rewrite, made in another store from the same samples.
    let rewritten = tempfile::tempdir().expect("dir");
    let other = Tsdb::open(rewritten.path()).expect("open");
    fill(&other);
    other.downsample_day(7, FIVE_MINUTES).expect("downsample");
    drop(other);

    // The crash: the original already renamed out of the way, the rewrite still staged.
    let dir = tempfile::tempdir().expect("dir");
    drop({
        let db = Tsdb::open(dir.path()).expect("open");
        fill(&db);
        db
    });
    std::fs::rename(dir.path().join("7"), dir.path().join("7.deleting")).expect("rename");
    copy_dir(&rewritten.path().join("7"), &dir.path().join("7.rewriting"));

    let db = Tsdb::open(dir.path()).expect("open after the crash");
    assert_five_minute_day(&db);
    assert_eq!(db.resolution(7), Some(FIVE_MINUTES));
    assert!(!dir.path().join("7.deleting").exists());
    assert!(!dir.path().join("7.rewriting").exists());
}

#[test]
fn a_crash_before_the_swap_keeps_the_original_and_drops_the_unfinished_rewrite() {
    let dir = tempfile::tempdir().expect("dir");
    let before = {
        let db = Tsdb::open(dir.path()).expect("open");
        fill(&db);
        db.seal_all_heads().expect("seal");
        db.sync().expect("sync");
        day_samples(&db, 7)
    };
    // A rewrite cut short: files written, the resolution file (written last) missing.
    let staged = dir.path().join("7.rewriting");
    copy_dir(&dir.path().join("7"), &staged);
    std::fs::write(staged.join("chunks.log"), b"torn").expect("write");

    let db = Tsdb::open(dir.path()).expect("open after the crash");
    assert_eq!(day_samples(&db, 7), before);
    assert_eq!(db.resolution(7), None);
    assert!(!staged.exists());
    // And the day is rewritten on the next pass.
    assert!(db.downsample_day(7, FIVE_MINUTES).expect("downsample").is_some());
    assert_five_minute_day(&db);
}

#[test]
fn a_series_written_again_after_its_purge_stays_live_and_purgeable_after_the_rewrite() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    let sample = |db: &Tsdb, n: i64| db.append(n as u64 + 1, &series("a"), 7 * DAY + n * SCRAPE, n as f64);
    for n in 0..10 {
        sample(&db, n).expect("append");
    }
    db.delete(11, &|l: &Labels| l.get("instance") == Some("a"))
        .expect("purge");
    for n in 11..20 {
        sample(&db, n).expect("append again");
    }
    db.downsample_day(7, FIVE_MINUTES)
        .expect("downsample")
        .expect("rewritten");
    drop(db);
    let db = Tsdb::open(dir.path()).expect("reopen");
    // The series written after the purge, one sample per five minutes; the purged one gone.
    assert_eq!(day_samples(&db, 7)["a"], vec![(7 * DAY + 19 * SCRAPE, 19.0)]);
    for n in 0..20 {
        assert!(!sample(&db, n).expect("replay"), "entry {} is held or purged", n + 1);
    }
    assert_eq!(db.stats().series, 1, "no second series of the same labels");
    // And a later purge reaches it.
    db.delete(40, &|l: &Labels| l.get("instance") == Some("a"))
        .expect("purge again");
    assert!(day_samples(&db, 7).is_empty());
}

#[test]
fn the_rewritten_day_takes_writes_and_snapshots_them_where_a_restart_reads_them() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    let last = fill(&db);
    db.downsample_day(7, FIVE_MINUTES)
        .expect("downsample")
        .expect("rewritten");
    assert!(db.append(last + 1, &series("late"), 7 * DAY + 5, 9.0).expect("late"));
    db.snapshot_heads(last + 1).expect("snapshot");
    drop(db);
    let db = Tsdb::open(dir.path()).expect("reopen");
    let day = day_samples(&db, 7);
    assert_eq!(day["late"], vec![(7 * DAY + 5, 9.0)]);
    assert_eq!(day["a"].len() as i64, DAY / FIVE_MINUTES);
}

#[test]
fn dropping_a_day_drops_a_rewrite_of_it_left_staged_too() {
    let dir = tempfile::tempdir().expect("dir");
    let db = Tsdb::open(dir.path()).expect("open");
    fill(&db);
    db.seal_all_heads().expect("seal");
    db.sync().expect("sync");
    // A complete rewrite a failure left behind (the resolution file is written last).
    let staged = dir.path().join("7.rewriting");
    copy_dir(&dir.path().join("7"), &staged);
    std::fs::write(staged.join("resolution"), b"300000").expect("write");
    assert!(db.drop_day(7).expect("drop"));
    assert!(!staged.exists());
    drop(db);
    let db = Tsdb::open(dir.path()).expect("reopen");
    assert_eq!(db.days(), vec![8], "retention's drop stands");
}
