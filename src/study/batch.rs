//! The batch size a model is scored with. `--batch-size` when given; else what the finished
//! parts of the model in the folder recorded (on a GPU a record's last bits depend on which
//! prompts share its batch, so a resumed run and the other shards of a folder go on as they
//! began); else 1 on the CPU; else chosen from the device's free memory once the model's
//! weights are resident (`engine::batch`). Settled once per model in a run.

use super::Study;
use crate::engine::ModelConfig;
use crate::engine::batch::{batch_size_for, chosen_line, prompt_bytes, weight_bytes};
use crate::engine::device::free_memory;
use crate::store::manifest::{Manifest, read_manifest};
use crate::vocab::Precision;
use std::collections::BTreeSet;

/// A model's batch size and, when it was not given, the line that tells the user why.
#[derive(Debug, PartialEq)]
pub(super) struct Settled {
    pub size: usize,
    pub note: Option<String>,
}

/// What the model is, as far as its memory goes: its shapes, the most positions an item
/// needs, the activations' width in bytes and the precision whose weights are resident.
pub(super) struct Resident<'a> {
    pub cfg: &'a ModelConfig,
    pub positions: usize,
    pub act_bytes: u64,
    pub precision: Precision,
}

/// The batch size of model `mi` (see the module's text). `manifest` is this run's.
pub(super) fn settle(study: &Study, manifest: &Manifest, mi: usize, r: &Resident) -> Settled {
    let spec = &study.spec;
    if study.batch_size_given {
        return Settled {
            size: spec.batch_size.max(1),
            note: None,
        };
    }
    let slug = &study.models[mi].slug;
    let recorded = recorded_sizes(study, manifest, slug);
    if let Some(&size) = recorded.first() {
        return Settled {
            size: size as usize,
            note: Some(recorded_line(slug, &recorded)),
        };
    }
    let Some(free) = free_memory(&study.device) else {
        let size = spec.batch_size.max(1);
        let note = (!study.device.is_cpu()).then(|| {
            format!(
                "batch size {size} (the free memory of {} could not be read; --batch-size to change)",
                spec.device
            )
        });
        return Settled { size, note };
    };
    let to_come = weights_to_come(study, r);
    let size = batch_size_for(free, to_come, prompt_bytes(r.cfg, r.positions, r.act_bytes));
    let mut note = chosen_line(size, free, &spec.device);
    if study.dir.shard.is_some() {
        note.push_str(&format!(
            "; shards give the records of one run only at one batch size: pass --batch-size {size} to the other shards"
        ));
    }
    Settled {
        size,
        note: Some(note),
    }
}

/// Device bytes of weights the model will hold beyond those resident now: its largest
/// precision, plus BF16 beside each other precision where the perplexity stage keeps BF16
/// as their reference (when the run measures perplexity: not on shards after the first).
fn weights_to_come(study: &Study, r: &Resident) -> u64 {
    let spec = &study.spec;
    let w = |p: Precision| weight_bytes(r.cfg, p);
    let keeps_bf16 = spec.ppl.is_some()
        && spec.precisions.contains(&Precision::Bf16)
        && study.dir.shard.is_none_or(|s| s.index == 1);
    let peak = spec
        .precisions
        .iter()
        .map(|&p| match keeps_bf16 && p != Precision::Bf16 {
            true => w(p) + w(Precision::Bf16),
            false => w(p),
        })
        .max()
        .unwrap_or(0);
    peak.saturating_sub(w(r.precision))
}

fn recorded_line(slug: &str, recorded: &BTreeSet<u64>) -> String {
    let mut line = format!(
        "batch size {}, as the finished parts of {slug} in this folder were scored (--batch-size to change)",
        recorded.first().copied().unwrap_or(1)
    );
    if recorded.len() > 1 {
        let all: Vec<String> = recorded.iter().map(|b| b.to_string()).collect();
        line.push_str(&format!(
            "; they were scored at {}: the smallest goes on",
            all.join(", ")
        ));
    }
    line
}

/// The batch sizes the finished parts of model `slug` recorded, in this run's manifest and,
/// for a shard, in the other shards' manifests of the same plan in its folder.
fn recorded_sizes(study: &Study, manifest: &Manifest, slug: &str) -> BTreeSet<u64> {
    let prefix = format!("model={slug}/");
    let mut out = BTreeSet::new();
    let mut add = |m: &Manifest| {
        out.extend(
            m.parts
                .iter()
                .filter(|(rel, _)| rel.starts_with(&prefix))
                .filter_map(|(_, e)| e.batch_size),
        );
    };
    add(manifest);
    if study.dir.shard.is_some() {
        let own = study.dir.manifest_path();
        for path in crate::store::shard_manifests(&study.dir.root) {
            // Another shard's manifest that cannot be read is that shard's to report.
            if let Ok(m) = read_manifest(&path).map_err(|_| ())
                && path != own
                && m.plan == study.plan
            {
                add(&m);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_run_says_which_batch_size_goes_on() {
        let one: BTreeSet<u64> = [128].into();
        assert_eq!(
            recorded_line("qwen", &one),
            "batch size 128, as the finished parts of qwen in this folder were scored (--batch-size to change)"
        );
        let two: BTreeSet<u64> = [128, 64].into();
        let line = recorded_line("qwen", &two);
        assert!(
            line.starts_with("batch size 64,")
                && line.ends_with("scored at 64, 128: the smallest goes on"),
            "{line}"
        );
    }
}
