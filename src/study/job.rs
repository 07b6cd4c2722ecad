//! The study job: a handle on a run in its own thread (inference never runs on async
//! workers). `Job::start` spawns it; every event, from the plan to the outcome, comes over
//! one channel; dropping the handle cancels the run and waits for the thread, so no caller
//! can leave a run going. The channel is tokio's unbounded one: the explorer awaits it in
//! its `select!`, `--batch` reads it blocking.

use super::{PlannedModel, StudySpec};
use crate::bbq::Selection;
use crate::engine::Precision;
use crate::error::{Error, Result};
use crate::store::ResultsDir;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// Everything a run needs, owned, so a job can take it to its thread (and the explorer can
/// start it again to resume).
#[derive(Clone)]
pub struct Study {
    pub spec: StudySpec,
    pub models: Vec<PlannedModel>,
    pub sel: Selection,
    /// The plan as the manifest stores it (`plan_json`).
    pub plan: crate::store::Plan,
    pub dir: ResultsDir,
    pub device: candle_core::Device,
    /// Whether `spec.batch_size` was given (`--batch-size`). When not, each model's batch
    /// size is what its finished parts in the folder recorded, else 1 on the CPU, else
    /// chosen from the device's free memory once the model's weights are resident.
    pub batch_size_given: bool,
}

/// The finished study: where it is.
#[derive(Debug)]
pub struct Outcome {
    pub dir: ResultsDir,
}

/// Throughput of one finished model-precision.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    pub model: String,
    pub precision: Precision,
    pub items: usize,
    pub prompt_tokens: u64,
    /// Tokens computed after prefix reuse (plus decoding steps).
    pub computed_tokens: u64,
    pub secs: f64,
}

/// A stage that finished.
#[derive(Debug, Clone, PartialEq)]
pub enum StageDone {
    /// A model's BF16 source is loaded.
    Loaded { model: String },
    /// A model is built at a precision (quantized, or loaded from its checkpoint).
    Built {
        model: String,
        precision: Precision,
        secs: f64,
    },
    /// Every pending part of a model-precision is scored and written.
    Scored(Throughput),
    /// A model's perplexity rows are written (or were already there).
    Perplexity { model: String },
    /// A model's batch size is settled when `--batch-size` was not given: taken from the
    /// folder's finished parts or chosen from free device memory; `note` says which, for
    /// the user (none on the CPU for a new run).
    BatchSize {
        model: String,
        size: usize,
        note: Option<String>,
    },
}

/// What a running study reports, in order; the last event is `Finished` or `Failed`.
#[derive(Debug)]
pub enum Event {
    /// What the run will do: records in the plan and records already on disk.
    Planned {
        total: u64,
        done: u64,
        /// Per precision (pooled over models): (precision, records in the plan, already done).
        per_precision: Vec<(Precision, u64, u64)>,
    },
    /// A stage starts (loading, quantizing, scoring, perplexity), as a line for people.
    Stage(String),
    /// Records finished at a precision, with the prompt tokens they took.
    Progress {
        precision: Precision,
        records: u64,
        prompt_tokens: u64,
    },
    /// A part file is on disk: readers may reload.
    PartWritten {
        model: String,
        precision: Precision,
        part: usize,
    },
    StageDone(StageDone),
    /// The run is complete.
    Finished(Outcome),
    /// The run stopped: `Error::Cancelled` when asked to; finished parts are kept.
    Failed(Error),
}

/// Sends a run's events; a closed channel (nobody listening) is not an error.
#[derive(Clone)]
pub(crate) struct Events(UnboundedSender<Event>);

impl Events {
    pub(crate) fn send(&self, e: Event) {
        let _ = self.0.send(e);
    }

    pub(crate) fn stage(&self, s: String) {
        self.send(Event::Stage(s));
    }
}

/// A study running in its own thread. Dropping it cancels the run and waits for the thread
/// (at most the batch in flight).
pub struct Job {
    events: UnboundedReceiver<Event>,
    cancel: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Job {
    /// Start (or resume) `study` in a new thread.
    pub fn start(study: Study) -> Job {
        let (tx, rx) = unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let thread = std::thread::spawn(move || {
            let events = Events(tx);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                super::run::run(&study, &events, &flag)
            }));
            events.send(match run {
                Ok(Ok(outcome)) => Event::Finished(outcome),
                Ok(Err(e)) => Event::Failed(e),
                Err(_) => Event::Failed(Error::Model("the study thread panicked".into())),
            });
        });
        Job {
            events: rx,
            cancel,
            thread: Some(thread),
        }
    }

    /// Ask the run to stop: it checks between batches, items and tensors, then reports
    /// `Failed(Error::Cancelled)`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The next event; `None` once the run's thread has ended and every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// The next event, blocking the calling thread (not for async code).
    pub fn next_blocking(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }

    /// Read every event to the end and return the outcome, passing the others to `each`.
    pub fn wait(mut self, mut each: impl FnMut(Event)) -> Result<Outcome> {
        while let Some(e) = self.next_blocking() {
            match e {
                Event::Finished(outcome) => return Ok(outcome),
                Event::Failed(err) => return Err(err),
                other => each(other),
            }
        }
        Err(Error::Model("the study ended without a result".into()))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
