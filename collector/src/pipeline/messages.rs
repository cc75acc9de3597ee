//! The detection thread's inbox: WAL entries' signals from the indexer, humans' feedback,
//! a cluster's findings and leadership, and the stop, in one bounded queue.

use std::sync::mpsc::SyncSender;

use vigil_detectors::Verdict;

use super::{DetectorInput, Findings};

/// What the detection thread is sent.
pub(crate) enum Msg {
    /// The signals of the WAL entry `lsn`.
    Inputs {
        lsn: u64,
        inputs: Vec<DetectorInput>,
    },
    Feedback {
        signal_key: String,
        verdict: Verdict,
    },
    /// A human acknowledged or silenced this incident's alert.
    Seal {
        incident: String,
    },
    /// A cluster worker gave up a partition at WAL entry `lsn`: its services moved away.
    Forget {
        lsn: u64,
        partition: u32,
        partitions: u32,
    },
    /// A cluster correlator's input: what the workers found ([`Mode::Correlate`]).
    Findings(Findings),
    /// A cluster correlator took the lead: correlate from the replicated incidents on.
    Lead,
    /// A cluster correlator lost the lead: stop correlating.
    Follow,
    /// Sent at shutdown after the indexer has applied everything.
    Stop,
}

/// The indexer's end of the channel.
#[derive(Clone)]
pub(crate) struct PipelineSender(pub(super) SyncSender<Msg>);

impl PipelineSender {
    /// Sends the signals of WAL entry `lsn`. Blocks while the detection thread is behind
    /// (bounded queue).
    pub(crate) fn send(&self, lsn: u64, inputs: Vec<DetectorInput>) {
        if !inputs.is_empty() {
            // Fails only when the detection thread has stopped (shutdown).
            let _ = self.0.send(Msg::Inputs { lsn, inputs });
        }
    }

    /// WAL entry `lsn` purged `partition` (of `partitions`): the detectors forget its
    /// services, whose silence here is no news (they moved to another worker).
    pub(crate) fn forget(&self, lsn: u64, partition: u32, partitions: u32) {
        let _ = self.0.send(Msg::Forget {
            lsn,
            partition,
            partitions,
        });
    }

    pub(crate) fn feedback(&self, signal_key: String, verdict: Verdict) {
        let _ = self.0.send(Msg::Feedback { signal_key, verdict });
    }

    /// An incident a human has taken on (acknowledged, resolved or silenced) takes no new
    /// findings: a new fault opens its own incident.
    pub(crate) fn seal(&self, incident: String) {
        // Called from request handlers: a full queue must not hold a runtime thread.
        if let Err(std::sync::mpsc::TrySendError::Full(msg)) = self.0.try_send(Msg::Seal { incident }) {
            let tx = self.0.clone();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(move || tx.send(msg))),
                Err(_) => drop(tx.send(msg)),
            }
        }
    }

    /// Hands the workers' findings to a cluster correlator's detection thread. Blocks while
    /// it is behind.
    pub(crate) fn findings(&self, findings: Findings) {
        let _ = self.0.send(Msg::Findings(findings));
    }

    /// Tells a cluster correlator's detection thread whether it leads now.
    pub(crate) fn set_leading(&self, leading: bool) {
        let _ = self.0.send(if leading { Msg::Lead } else { Msg::Follow });
    }

    /// Asks the detection thread to save and stop once it has drained its queue.
    pub(crate) fn stop(&self) {
        let _ = self.0.send(Msg::Stop);
    }
}
