//! The study job as a library handle, on a tiny random-weight GGUF: its events in order
//! (plan, stages, progress, each part written, throughput, outcome), cancel before any
//! work, and cancel on drop.
mod common;

use common::{part_files, tempdir};
use stereoscope::bbq::{self, Conditions, LocateSpec, SelectSpec};
use stereoscope::engine::{self, Compute, Precision, Scheme};
use stereoscope::error::Error;
use stereoscope::prompt::{OptionOrder, Protocol};
use stereoscope::store::ResultsDir;
use stereoscope::study::{self, Event, Job, StageDone, Study, StudySpec};

/// A study of 6 Age items in parts of 2 at bf16 and q4, into a fresh folder.
fn tiny_study(tag: &str) -> Study {
    tiny_study_in(tag, 2, 1)
}

/// The study of [`tiny_study`] in parts of `part_size` items, `batch_size` prompts a pass.
fn tiny_study_in(tag: &str, part_size: usize, batch_size: usize) -> Study {
    let tmp = tempdir(tag);
    let model = tmp.join("tiny-llama.gguf");
    common::write_tiny_gguf(&model);
    let categories = vec!["Age".to_string()];
    let dir = bbq::locate(
        &LocateSpec {
            dir: Some(common::bbq_dir()),
            download: false,
        },
        &categories,
    )
    .expect("bbq");
    let sel = bbq::select(
        &dir,
        &SelectSpec {
            categories,
            conditions: Conditions::Ambig,
            limit: Some(6),
            skip_bad: false,
        },
    )
    .expect("selection");
    let resolved = engine::resolve_model(model.to_str().expect("utf8")).expect("model");
    let models = study::plan_models(std::slice::from_ref(&resolved)).expect("planned");
    let spec = StudySpec {
        models: vec![resolved],
        scheme: Scheme::Gguf,
        precisions: vec![Precision::Bf16, Precision::Q4],
        seeds: vec![0, 1],
        noise_seeds: Vec::new(),
        compute: Compute::Dequant,
        device: "cpu".into(),
        part_size,
        batch_size,
        ppl: None,
        protocol: Protocol::default(),
        option_orders: vec![OptionOrder::STUDY],
    };
    let plan = study::plan_json(&spec, &models, &sel, &serde_json::json!({}));
    Study {
        spec,
        models,
        sel,
        plan,
        dir: ResultsDir::at(&tmp.join("out")),
        device: candle_core::Device::Cpu,
        batch_size_given: true,
    }
}

#[test]
fn a_job_reports_the_plan_each_part_and_the_outcome_on_one_channel() {
    let s = tiny_study("job-events");
    let root = s.dir.root.clone();
    let mut job = Job::start(s);
    let mut events = Vec::new();
    while let Some(e) = job.next_blocking() {
        events.push(e);
    }
    assert!(
        matches!(
            events.first(),
            Some(Event::Planned {
                total: 24,
                done: 0,
                ..
            })
        ),
        "{:?}",
        events.first()
    );
    let written: Vec<(Precision, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::PartWritten {
                precision, part, ..
            } => Some((*precision, *part)),
            _ => None,
        })
        .collect();
    let expected: Vec<(Precision, usize)> = [Precision::Bf16, Precision::Q4]
        .into_iter()
        .flat_map(|p| (0..3).map(move |k| (p, k)))
        .collect();
    assert_eq!(written, expected);
    let records: u64 = events
        .iter()
        .map(|e| match e {
            Event::Progress { records, .. } => *records,
            _ => 0,
        })
        .sum();
    assert_eq!(records, 24);
    let scored: Vec<(Precision, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::StageDone(StageDone::Scored(t)) => Some((t.precision, t.items)),
            _ => None,
        })
        .collect();
    assert_eq!(scored, vec![(Precision::Bf16, 6), (Precision::Q4, 6)]);
    match events.last() {
        Some(Event::Finished(outcome)) => assert_eq!(outcome.dir.root, root),
        other => panic!("the last event is not Finished: {other:?}"),
    }
    assert_eq!(part_files(&root).len(), 6);
}

/// Batched scoring (a part of 4 items here is two batches of 2) counts every record once
/// in its progress, each part's before the part is written.
#[test]
fn a_batched_job_counts_each_record_once_before_its_part_is_written() {
    let s = tiny_study_in("job-batched", 4, 2);
    let mut job = Job::start(s);
    let (mut progress, mut at_writes) = (0u64, Vec::new());
    while let Some(e) = job.next_blocking() {
        match e {
            Event::Progress { records, .. } => progress += records,
            Event::PartWritten { .. } => at_writes.push(progress),
            Event::Failed(e) => panic!("the run failed: {e}"),
            _ => {}
        }
    }
    // Parts of 4 and 2 items at 2 seeds, at bf16 then q4.
    assert_eq!(at_writes, vec![8, 12, 20, 24]);
    assert_eq!(progress, 24);
}

#[test]
fn a_cancelled_job_fails_with_cancelled_and_writes_no_part() {
    let s = tiny_study("job-cancel");
    let root = s.dir.root.clone();
    let job = Job::start(s);
    job.cancel();
    // The flag is set before the run's first check (after loading the model).
    match job.wait(|_| {}) {
        Err(Error::Cancelled) => {}
        Err(e) => panic!("expected a cancel, got {e}"),
        Ok(_) => panic!("the cancelled run finished"),
    }
    assert_eq!(part_files(&root).len(), 0);
}

#[test]
fn dropping_a_job_cancels_it_and_waits_for_its_thread() {
    let s = tiny_study("job-drop");
    let root = s.dir.root.clone();
    let job = Job::start(s);
    drop(job);
    // The thread has ended when the drop returns: the run released the folder's lock, so
    // nothing more can be written and another run may take the folder.
    let lock =
        stereoscope::store::lock::FolderLock::acquire(&stereoscope::store::ResultsDir::at(&root))
            .expect("the dropped job released the folder");
    drop(lock);
    assert!(
        part_files(&root).len() < 6,
        "the job was cancelled before its last part"
    );
}
