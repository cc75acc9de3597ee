//! Small tantivy collectors reading fast-field columns: counting per string value,
//! time histograms, and raw metric points.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

/// Counts matching documents per value of a string fast field.
pub(super) struct CountByStr(pub &'static str);

pub(super) struct CountByStrSegment {
    column: Option<StrColumn>,
    counts: HashMap<u64, u64>,
}

impl Collector for CountByStr {
    type Fruit = HashMap<String, u64>;
    type Child = CountByStrSegment;

    fn for_segment(&self, _: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<CountByStrSegment> {
        Ok(CountByStrSegment {
            column: segment.fast_fields().str(self.0)?,
            counts: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<String, u64>>) -> tantivy::Result<HashMap<String, u64>> {
        let mut out: HashMap<String, u64> = HashMap::new();
        for fruit in fruits {
            for (k, v) in fruit {
                *out.entry(k).or_default() += v;
            }
        }
        Ok(out)
    }
}

impl SegmentCollector for CountByStrSegment {
    type Fruit = HashMap<String, u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(column) = &self.column {
            for ord in column.term_ords(doc) {
                *self.counts.entry(ord).or_default() += 1;
            }
        }
    }

    fn harvest(self) -> HashMap<String, u64> {
        let mut out = HashMap::with_capacity(self.counts.len());
        if let Some(column) = &self.column {
            for (ord, n) in self.counts {
                let mut s = String::new();
                if column.ord_to_str(ord, &mut s).unwrap_or(false) {
                    out.insert(s, n);
                }
            }
        }
        out
    }
}

/// Counts matching documents per value of a u64 fast field.
pub(crate) struct CountByU64(pub(crate) &'static str);

pub(crate) struct CountByU64Segment {
    column: Column<u64>,
    counts: HashMap<u64, u64>,
}

impl Collector for CountByU64 {
    type Fruit = HashMap<u64, u64>;
    type Child = CountByU64Segment;

    fn for_segment(&self, _: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<CountByU64Segment> {
        Ok(CountByU64Segment {
            column: segment.fast_fields().u64(self.0)?,
            counts: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<HashMap<u64, u64>>) -> tantivy::Result<HashMap<u64, u64>> {
        let mut out: HashMap<u64, u64> = HashMap::new();
        for fruit in fruits {
            for (k, v) in fruit {
                *out.entry(k).or_default() += v;
            }
        }
        Ok(out)
    }
}

impl SegmentCollector for CountByU64Segment {
    type Fruit = HashMap<u64, u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(v) = self.column.first(doc) {
            *self.counts.entry(v).or_default() += 1;
        }
    }

    fn harvest(self) -> HashMap<u64, u64> {
        self.counts
    }
}

/// Counts matching documents per time bucket of an i64 nanosecond fast field.
pub(super) struct TimeHistogram {
    pub field: &'static str,
    pub start_ns: i64,
    pub bucket_ns: i64,
    pub buckets: usize,
}

pub(super) struct TimeHistogramSegment {
    column: Column<i64>,
    start_ns: i64,
    bucket_ns: i64,
    counts: Vec<u64>,
}

impl Collector for TimeHistogram {
    type Fruit = Vec<u64>;
    type Child = TimeHistogramSegment;

    fn for_segment(&self, _: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<TimeHistogramSegment> {
        Ok(TimeHistogramSegment {
            column: segment.fast_fields().i64(self.field)?,
            start_ns: self.start_ns,
            bucket_ns: self.bucket_ns,
            counts: vec![0; self.buckets],
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        let mut out = vec![0; self.buckets];
        for fruit in fruits {
            for (o, v) in out.iter_mut().zip(fruit) {
                *o += v;
            }
        }
        Ok(out)
    }
}

impl SegmentCollector for TimeHistogramSegment {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _: Score) {
        if let Some(ts) = self.column.first(doc) {
            let i = (ts - self.start_ns).div_euclid(self.bucket_ns);
            if let Some(slot) = usize::try_from(i).ok().and_then(|i| self.counts.get_mut(i)) {
                *slot += 1;
            }
        }
    }

    fn harvest(self) -> Vec<u64> {
        self.counts
    }
}

/// One metric point as read from the columns.
#[derive(Debug, Clone, Copy)]
pub(super) struct RawPoint {
    pub series_id: u64,
    pub ts: i64,
    pub value: f64,
}

/// Collects `(series_id, ts, value)` of every matching point, plus one document
/// address per series (to read its labels), capped at `max_points`.
pub(super) struct MetricPoints {
    pub max_points: usize,
}

pub(super) struct MetricPointsSegment {
    segment: SegmentOrdinal,
    series: Column<u64>,
    ts: Column<i64>,
    value: Column<f64>,
    points: Vec<RawPoint>,
    first_doc: HashMap<u64, DocAddress>,
    max_points: usize,
    truncated: bool,
}

/// Points, one address per series, and whether the cap cut the result.
pub(super) type MetricPointsFruit = (Vec<RawPoint>, HashMap<u64, DocAddress>, bool);

impl Collector for MetricPoints {
    type Fruit = MetricPointsFruit;
    type Child = MetricPointsSegment;

    fn for_segment(&self, ord: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<MetricPointsSegment> {
        let ff = segment.fast_fields();
        Ok(MetricPointsSegment {
            segment: ord,
            series: ff.u64("series_id")?,
            ts: ff.i64("ts")?,
            value: ff.f64("value")?,
            points: Vec::new(),
            first_doc: HashMap::new(),
            max_points: self.max_points,
            truncated: false,
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<MetricPointsFruit>) -> tantivy::Result<MetricPointsFruit> {
        let mut points = Vec::new();
        let mut first = HashMap::new();
        let mut truncated = false;
        for (p, f, t) in fruits {
            points.extend(p);
            for (k, v) in f {
                first.entry(k).or_insert(v);
            }
            truncated |= t;
        }
        if points.len() > self.max_points {
            points.truncate(self.max_points);
            truncated = true;
        }
        Ok((points, first, truncated))
    }
}

impl SegmentCollector for MetricPointsSegment {
    type Fruit = MetricPointsFruit;

    fn collect(&mut self, doc: DocId, _: Score) {
        let (Some(series_id), Some(ts)) = (self.series.first(doc), self.ts.first(doc)) else {
            return;
        };
        self.first_doc
            .entry(series_id)
            .or_insert(DocAddress::new(self.segment, doc));
        if self.points.len() >= self.max_points {
            self.truncated = true;
            return;
        }
        let value = self.value.first(doc).unwrap_or(f64::NAN);
        self.points.push(RawPoint { series_id, ts, value });
    }

    fn harvest(self) -> MetricPointsFruit {
        (self.points, self.first_doc, self.truncated)
    }
}
