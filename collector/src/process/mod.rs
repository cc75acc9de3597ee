//! The processing stage, between the write-ahead log and its consumers (Quickwit's
//! DocProcessor has the same place). It takes LSN-ordered entries from a [`Source`], decodes
//! each once, stamps its log records with pattern ids once, and hands the index documents to
//! the indexer and the detector inputs to the detection pipeline. Each consumer keeps its own
//! LSN checkpoint — the indexes in each partition's commit, the detectors in their saved
//! state — so a replay gives each only what it does not hold yet.
//!
//! The local WAL is the first source; a replicated log (the scale-out issue) is meant to be
//! a second one.

mod inputs;
mod metric_help;
mod patterns;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use inputs::{log_inputs, metric_inputs, span_inputs};

use crate::pipeline::{DetectorInput, PipelineSender};
pub(crate) use metric_help::MetricHelp;
pub(crate) use patterns::PatternCatalog;

use crate::storage::{Indexer, MetricSample, Schemas, TimedDocs, log_docs, metric_docs, span_docs};
use crate::wal::{Purge, Signal, WalBatch, WalEntry};

/// How often the pattern catalogue is saved while lines keep coming (and at shutdown): a
/// crash loses at most this much pattern learning, never log records.
const PATTERN_SAVE_EVERY: Duration = Duration::from_secs(30);

/// Where the stage's entries come from, in LSN order.
pub(crate) trait Source {
    /// The next entry, waiting at most `wait`.
    fn next(&mut self, wait: Duration) -> Next;
}

/// What a [`Source`] had.
pub(crate) enum Next {
    Entry(WalEntry),
    /// Nothing within the wait.
    Idle,
    /// The source is finished (the WAL writer hung up at shutdown).
    Closed,
}

/// The local write-ahead log: its writer thread hands over each durable entry.
impl Source for Receiver<WalEntry> {
    fn next(&mut self, wait: Duration) -> Next {
        match self.recv_timeout(wait) {
            Ok(entry) => Next::Entry(entry),
            Err(RecvTimeoutError::Timeout) => Next::Idle,
            Err(RecvTimeoutError::Disconnected) => Next::Closed,
        }
    }
}

/// One entry, processed: its documents and what the detectors need from it.
pub(crate) struct Processed {
    pub signal: Signal,
    pub batch_id: Option<String>,
    pub docs: TimedDocs,
    /// Gauge and sum points, for the time-series store.
    pub samples: Vec<MetricSample>,
    pub inputs: Vec<DetectorInput>,
}

/// Decodes a WAL payload once into index documents and (when `detect`) detector inputs, the
/// log records' pattern ids from one miner call each. An error says why the entry cannot
/// be used.
pub(crate) fn process(
    schemas: &Schemas,
    patterns: &PatternCatalog,
    help: &MetricHelp,
    payload: &Bytes,
    detect: bool,
) -> Result<Processed, String> {
    let batch = WalBatch::decode(payload).map_err(|e| format!("undecodable write-ahead log entry: {e}"))?;
    let mut inputs = Vec::new();
    let mut samples = Vec::new();
    let docs = match batch.signal {
        Signal::Logs => ExportLogsServiceRequest::decode(batch.otlp.clone()).map(|r| {
            let mut miner = patterns.feed();
            let mut assignments = Vec::new();
            let docs = log_docs(&schemas.logs, &r, &mut |body, ts| {
                let a = miner.add(body, ts);
                if detect {
                    // The template only travels with a pattern's first line.
                    let template = if a.is_new {
                        miner.get(a.pattern_id).map(|p| p.template()).unwrap_or_default()
                    } else {
                        String::new()
                    };
                    assignments.push((a.pattern_id, a.is_new, template));
                }
                a.pattern_id
            });
            if detect {
                inputs = log_inputs(&r, &assignments);
            }
            docs
        }),
        Signal::Traces => ExportTraceServiceRequest::decode(batch.otlp.clone()).map(|r| {
            if detect {
                inputs = span_inputs(&r);
            }
            span_docs(&schemas.spans, &r)
        }),
        Signal::Metrics => ExportMetricsServiceRequest::decode(batch.otlp.clone()).map(|r| {
            help.learn(&r);
            if detect {
                inputs = metric_inputs(&r);
            }
            let (docs, numbers) = metric_docs(&schemas.metrics, &r);
            samples = numbers;
            docs
        }),
    }
    .map_err(|e| format!("write-ahead log entry with an undecodable OTLP body: {e}"))?;
    Ok(Processed {
        signal: batch.signal,
        batch_id: batch.batch_id,
        docs,
        samples,
        inputs,
    })
}

/// The stage: one thread taking entries from a source to the indexer and the detectors.
pub(crate) struct Stage {
    schemas: Schemas,
    patterns: Arc<PatternCatalog>,
    help: Arc<MetricHelp>,
    last_pattern_save: Instant,
    indexer: Indexer,
    pipeline: Option<PipelineSender>,
}

impl Stage {
    pub(crate) fn new(
        schemas: Schemas,
        patterns: Arc<PatternCatalog>,
        help: Arc<MetricHelp>,
        indexer: Indexer,
    ) -> Stage {
        Stage {
            schemas,
            patterns,
            help,
            last_pattern_save: Instant::now(),
            indexer,
            pipeline: None,
        }
    }

    /// Feeds every applied entry (replayed ones too) to the detection pipeline, which knows
    /// which of them its restored state already holds.
    pub(crate) fn set_pipeline(&mut self, pipeline: PipelineSender) {
        self.pipeline = Some(pipeline);
    }

    pub(crate) fn indexer(&mut self) -> &mut Indexer {
        &mut self.indexer
    }

    /// Processes entry `lsn` and hands it to both consumers.
    pub(crate) fn apply(&mut self, lsn: u64, payload: &Bytes) {
        if let Some(purge) = Purge::decode(payload) {
            let doomed = |service: &str| crate::cluster::partition_of(service, purge.partitions) == purge.partition;
            let suffix = format!("/p{}", purge.partition);
            self.indexer.purge(lsn, &doomed, &|id: &str| id.ends_with(&suffix));
            // The detectors forget those services: their silence here is no news.
            if let Some(pipeline) = &self.pipeline {
                pipeline.forget(lsn, purge.partition, purge.partitions);
            }
            return;
        }
        match process(
            &self.schemas,
            &self.patterns,
            &self.help,
            payload,
            self.pipeline.is_some(),
        ) {
            Ok(p) => {
                if let Some(pipeline) = &self.pipeline {
                    pipeline.send(lsn, p.inputs);
                }
                self.indexer
                    .apply(lsn, p.signal, p.batch_id.as_deref(), p.docs, p.samples);
            }
            Err(e) => {
                tracing::error!(lsn, error = %e, "skipping a write-ahead log entry");
                if let Some(pipeline) = &self.pipeline {
                    pipeline.send(lsn, Vec::new());
                }
                self.indexer.skip(lsn);
            }
        }
    }

    /// The thread body: runs until the source is finished, then lets the indexer commit,
    /// saves the pattern catalogue and returns.
    pub(crate) fn run(mut self, mut source: impl Source) {
        loop {
            match source.next(self.indexer.until_due()) {
                Next::Entry(entry) => self.apply(entry.lsn, &entry.payload),
                Next::Idle => {}
                Next::Closed => break,
            }
            self.indexer.tick();
            if self.patterns.is_dirty() && self.last_pattern_save.elapsed() >= PATTERN_SAVE_EVERY {
                self.save_patterns();
            }
        }
        // The catalogue first: every id the last commit writes can then be named.
        if self.patterns.is_dirty() {
            self.save_patterns();
        }
        self.indexer.finish();
    }

    fn save_patterns(&mut self) {
        self.last_pattern_save = Instant::now();
        if let Err(e) = self.patterns.save() {
            tracing::error!(error = %e, "could not save the log pattern catalogue");
        }
    }
}
