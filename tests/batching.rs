//! Batched scoring against prompt-by-prompt scoring: the same records from one forward pass
//! over several padded prompts as from one prompt at a time, on the real SmolLM2 model and
//! on tiny random models of every architecture.

mod common;

use candle_core::{DType, Device};
use std::collections::HashMap;
use std::path::Path;
use stereoscope::engine::source::{self, ModelSpec, Resolved};
use stereoscope::engine::{KvCache, Precision, Scheme, quant};
use stereoscope::store;
use stereoscope::vocab::Compute;

type Key = (String, i64, i64, String);

fn records(dir: &Path) -> HashMap<Key, store::Record> {
    let mut out = HashMap::new();
    for part in common::part_files(dir) {
        let tag = part
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for r in store::read_records(&part).expect("part reads") {
            let key = (r.category.clone(), r.example_id, r.seed, tag.clone());
            assert!(out.insert(key, r).is_none(), "duplicate record");
        }
    }
    out
}

#[test]
fn smollm2_batch_of_8_gives_the_records_of_batch_1() {
    let tmp = common::tempdir("batching");
    let model = common::smollm2();
    let bbq = common::bbq_dir();
    let run = |bs: &str| {
        let out = tmp.join(format!("b{bs}"));
        let o = common::run(
            &[
                "--batch",
                "--model",
                model.to_str().expect("utf-8"),
                "--bbq-dir",
                bbq.to_str().expect("utf-8"),
                "--categories",
                "Age,Religion",
                "--limit",
                "16",
                "--precisions",
                "bf16,q4",
                "--ppl-sequences",
                "0",
                "--part-size",
                "8",
                "--batch-size",
                bs,
                "--out",
                out.to_str().expect("utf-8"),
            ],
            &tmp.join("cache"),
        );
        assert!(o.status.success(), "{}", common::stderr(&o));
        records(&out)
    };
    let one = run("1");
    let eight = run("8");
    assert_eq!(one.len(), 16 * 5 * 2);
    let mut keys_one: Vec<&Key> = one.keys().collect();
    let mut keys_eight: Vec<&Key> = eight.keys().collect();
    keys_one.sort();
    keys_eight.sort();
    assert_eq!(keys_one, keys_eight, "the same record keys");
    let (mut max_d, mut same) = (0f64, 0usize);
    for (k, a) in &one {
        let b = &eight[k];
        for i in 0..3 {
            max_d = max_d.max((a.prob[i] - b.prob[i]).abs());
            max_d = max_d.max((a.samp_prob[i] - b.samp_prob[i]).abs());
        }
        same += usize::from(a.answer == b.answer && a.role == b.role);
    }
    eprintln!(
        "batch 8 against batch 1: max |Δp| {max_d:.2e}, same answers {same}/{}",
        one.len()
    );
    assert!(max_d < 1e-4, "letter probabilities differ by {max_d}");
    // The agreement is over real answers: most are valid, of more than one role.
    let valid = one.values().filter(|r| r.answer.is_some()).count();
    assert!(
        valid * 2 > one.len(),
        "{valid} of {} answers valid",
        one.len()
    );
    let roles: std::collections::HashSet<_> = one.values().map(|r| r.role).collect();
    assert!(roles.len() >= 3, "roles: {roles:?}");
    assert!(
        same as f64 >= 0.995 * one.len() as f64,
        "{same} of {} answers agree",
        one.len()
    );
}

/// A tiny random model of `arch` written under `tmp` and loaded as a source.
fn tiny_source(tmp: &Path, arch: &str) -> source::SourceModel {
    let dir = tmp.join(arch);
    common::write_tiny_arch(&dir, arch);
    source::load(&Resolved {
        id: arch.into(),
        spec: ModelSpec::HfDir(dir),
    })
    .expect("tiny model loads")
}

#[test]
fn a_padded_batch_gives_each_prompt_its_own_logits() {
    let tmp = common::tempdir("batch-forward");
    let dev = Device::Cpu;
    for arch in ["llama", "mistral", "qwen2", "phi3"] {
        let src = tiny_source(&tmp, arch);
        for p in [Precision::Bf16, Precision::Q4] {
            let m = quant::build(&src, p, Scheme::Mlx, Compute::Dequant, &dev)
                .expect("build")
                .model;
            assert_eq!(m.dtype, DType::F32);
            let prefix: Vec<u32> = vec![1, 5, 9, 2];
            let rows: Vec<Vec<u32>> = vec![vec![3, 4, 7, 8, 11], vec![6], vec![12, 13, 3]];
            let (_, cache) = m.forward(&prefix, &KvCache::default()).expect("prefix");
            let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
            let (batched, bcache) = m.forward_batch(&refs, &cache).expect("batch");
            let batched: Vec<Vec<f32>> = batched.to_vec2().expect("logits");
            for (b, row) in rows.iter().enumerate() {
                let (alone, _) = m.forward(row, &cache).expect("alone");
                let alone: Vec<f32> = alone.to_vec1().expect("logits");
                let d = common::max_abs_diff(&alone, &batched[b]);
                assert!(d < 1e-4, "{arch} {p}: row {b} differs by {d}");
                // The row's cache continues as the prompt's own cache does.
                let own = bcache.select(&[b]).expect("row cache");
                let (next_b, _) = m.forward(&[2], &own).expect("continue");
                let (_, solo) = m.forward(row, &cache).expect("solo");
                let (next_a, _) = m.forward(&[2], &solo).expect("continue");
                let (a, c): (Vec<f32>, Vec<f32>) =
                    (next_a.to_vec1().expect("a"), next_b.to_vec1().expect("b"));
                let d = common::max_abs_diff(&a, &c);
                assert!(
                    d < 1e-4,
                    "{arch} {p}: continuation of row {b} differs by {d}"
                );
            }
        }
    }
}

/// Batched continuation: rows of different lengths, picked (some twice) from a batch's
/// cache and each extended by its own tokens over two steps, give each row the logits that
/// the same tokens give one prompt at a time.
#[test]
fn ragged_rows_extend_as_each_prompt_alone() {
    let tmp = common::tempdir("ragged");
    let dev = Device::Cpu;
    for arch in ["llama", "qwen2", "phi3"] {
        let src = tiny_source(&tmp, arch);
        let m = quant::build(&src, Precision::Q4, Scheme::Mlx, Compute::Dequant, &dev)
            .expect("build")
            .model;
        let prefix: Vec<u32> = vec![1, 5, 9, 2];
        let rows: Vec<Vec<u32>> = vec![vec![3, 4, 7, 8, 11], vec![6], vec![12, 13, 3]];
        let (_, cache) = m.forward(&prefix, &KvCache::default()).expect("prefix");
        let refs: Vec<&[u32]> = rows.iter().map(|r| r.as_slice()).collect();
        let (_, bcache) = m.forward_batch(&refs, &cache).expect("batch");
        // Step 1: rows 1, 0, 1 (row 1 twice, with different tokens); step 2: each again.
        let pick = [1usize, 0, 1];
        let step1: [u32; 3] = [4, 9, 10];
        let step2: [u32; 3] = [7, 2, 5];
        let one = |t: &[u32; 3]| -> Vec<[u32; 1]> { t.iter().map(|&x| [x]).collect() };
        let s1 = one(&step1);
        let s1: Vec<&[u32]> = s1.iter().map(|t| t.as_slice()).collect();
        let (l1, c1) = m
            .forward_batch(&s1, &bcache.select(&pick).expect("select"))
            .expect("step 1");
        let s2 = one(&step2);
        let s2: Vec<&[u32]> = s2.iter().map(|t| t.as_slice()).collect();
        let (l2, _) = m
            .forward_batch(&s2, &c1.select(&[0, 1, 2]).expect("select"))
            .expect("step 2");
        let (l1, l2): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            (l1.to_vec2().expect("l1"), l2.to_vec2().expect("l2"));
        for (k, &b) in pick.iter().enumerate() {
            let mut alone: Vec<u32> = prefix.clone();
            alone.extend(&rows[b]);
            alone.push(step1[k]);
            let (a1, c) = m.forward(&alone, &KvCache::default()).expect("alone");
            let (a2, _) = m.forward(&[step2[k]], &c).expect("alone 2");
            let d1 = common::max_abs_diff(&a1.to_vec1::<f32>().expect("a1"), &l1[k]);
            let d2 = common::max_abs_diff(&a2.to_vec1::<f32>().expect("a2"), &l2[k]);
            assert!(
                d1 < 1e-4 && d2 < 1e-4,
                "{arch}: row {k} differs by {d1}, {d2}"
            );
        }
    }
}
