//! MLX folders as model sources. `mlx_lm.convert` quantizes tiny models here; its packed
//! words, scales and biases equal stereoscope's own MLX quantization of the same BF16
//! weights, module for module, and the folder computes exactly what in-process
//! quantization computes. The binary runs such a folder alone (at the precision it holds)
//! and as a `--checkpoint` beside its BF16 source, and rejects broken folders by name.
mod common;

use common::{run, stderr, stdout, tempdir};
use half::bf16;
use std::path::{Path, PathBuf};
use std::process::Command;
use stereoscope::engine::{self, Compute, KvCache, Precision, Scheme, hf, mlx, quant};

fn convert(src: &Path, out: &Path, bits: u32) {
    common::mlx_convert(
        src,
        out,
        &["--q-group-size", "64", "--q-bits", &bits.to_string()],
    );
}

fn logits(dir: &Path, p: Precision) -> Vec<f32> {
    let src = engine::source::load(
        &engine::resolve_model(dir.to_str().expect("utf8")).expect("resolves"),
    )
    .expect("loads");
    let built = quant::build(
        &src,
        p,
        Scheme::Mlx,
        Compute::Dequant,
        &candle_core::Device::Cpu,
    )
    .expect("builds");
    let tokens = [261u32, 72, 101, 108, 108, 111, 32, 256, 257, 258];
    let (l, _) = built
        .model
        .forward(&tokens, &KvCache::default())
        .expect("forward");
    l.to_vec1().expect("logits")
}

#[test]
fn mlx_lm_convert_output_equals_in_process_quantization() {
    common::require_mlx_lm("mlx_lm_convert_output_equals_in_process_quantization");
    let tmp = tempdir("mlxconv");
    for arch in ["llama", "phi3"] {
        let src = tmp.join(arch);
        common::write_tiny_arch(&src, arch);
        let source: std::collections::HashMap<String, candle_core::Tensor> =
            candle_core::safetensors::load(
                src.join("model.safetensors"),
                &candle_core::Device::Cpu,
            )
            .expect("source");
        let quantizable: Vec<&String> = source
            .iter()
            .filter(|(_, t)| t.rank() == 2 && t.dims()[1] % 64 == 0)
            .map(|(n, _)| n)
            .collect();
        for (bits, p) in [
            (8, Precision::Q8),
            (6, Precision::Q6),
            (4, Precision::Q4),
            (3, Precision::Q3),
        ] {
            let out = tmp.join(format!("{arch}-q{bits}"));
            convert(&src, &out, bits);
            let packed = hf::read_packed(&out).expect("reads packed tensors");
            assert_eq!(
                packed.len(),
                quantizable.len(),
                "{arch} q{bits}: modules quantized"
            );
            for name in &quantizable {
                let module = name.trim_end_matches(".weight");
                let theirs = packed
                    .get(module)
                    .unwrap_or_else(|| panic!("{arch} q{bits}: {module} not packed"));
                let t = &source[*name];
                let (rows, cols) = t.dims2().expect("2-D");
                let w: Vec<bf16> = t.flatten_all().expect("flat").to_vec1().expect("bf16");
                let ours = mlx::quantize(&w, rows, cols, bits, 64).expect("quantizes");
                assert_eq!(
                    &ours, theirs,
                    "{arch} q{bits}: {module} differs from mlx_lm.convert"
                );
            }
            let (a, b) = (logits(&src, p), logits(&out, p));
            let max = common::max_abs_diff(&a, &b);
            assert!(
                max == 0.0,
                "{arch} q{bits}: folder and in-process logits differ by {max}"
            );
        }
    }
}

/// Records of one precision as (category, example_id, seed, answer, prob_a) rows via pyarrow.
fn records(out: &Path, precision: &str) -> String {
    let script = "import sys, pyarrow.dataset as ds, pyarrow.compute as pc\n\
        t = ds.dataset(sys.argv[1], partitioning='hive').to_table()\n\
        t = t.filter(pc.equal(t['precision'], sys.argv[2])).sort_by([('category','ascending'),('example_id','ascending'),('seed','ascending')])\n\
        d = t.to_pydict()\n\
        print(sorted(set(t['precision'].to_pylist())), list(zip(d['example_id'], d['seed'], d['answer'], d['prob_a'])))\n";
    let r = Command::new("python3")
        .args(["-c", script])
        .arg(out.join("records"))
        .arg(precision)
        .output()
        .expect("python3");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8_lossy(&r.stdout).into_owned()
}

fn study(model: &Path, extra: &[&str], out: &Path, cache: &Path) -> std::process::Output {
    let bbq = common::bbq_dir();
    let mut args = vec![
        "--batch",
        "--model",
        model.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age",
        "--limit",
        "6",
        "--out",
        out.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    run(&args, cache)
}

#[test]
fn an_mlx_folder_runs_alone_and_as_a_checkpoint() {
    common::require_mlx_lm("an_mlx_folder_runs_alone_and_as_a_checkpoint");
    let tmp = tempdir("mlxrun");
    let cache = tmp.join("cache");
    let src = tmp.join("tiny-qwen2");
    common::write_tiny_arch(&src, "qwen2");
    let q4 = tmp.join("tiny-qwen2-q4");
    convert(&src, &q4, 4);
    let q4s = q4.to_str().expect("utf8");

    let alone = tmp.join("alone");
    let o = study(&q4, &[], &alone, &cache);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(alone.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    assert_eq!(m["plan"]["precisions"], serde_json::json!(["q4"]));
    let entry = m["models"]
        .as_object()
        .expect("models")
        .values()
        .next()
        .expect("model");
    assert_eq!(entry["holds"]["precision"], "q4", "{entry}");
    assert_eq!(entry["format"], "mlx");

    let with = tmp.join("with-checkpoint");
    let arg = format!("q4={q4s}");
    let o = study(
        &src,
        &["--precisions", "bf16,q4", "--checkpoint", &arg],
        &with,
        &cache,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(with.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let entry = m["models"]
        .as_object()
        .expect("models")
        .values()
        .next()
        .expect("model");
    assert_eq!(entry["precisions"]["q4"]["weights"]["checkpoint"], q4s);
    assert_eq!(
        entry["precisions"]["bf16"]["weights"]["quantized_in_process"],
        false
    );

    let inproc = tmp.join("in-process");
    let o = study(&src, &["--precisions", "bf16,q4"], &inproc, &cache);
    assert!(o.status.success(), "{}", stderr(&o));
    // The same weights give the same records, whichever way they were made.
    let r = records(&inproc, "q4");
    assert!(r.starts_with("['q4'] [("), "{r}");
    assert_eq!(records(&with, "q4"), r);
    assert_eq!(records(&alone, "q4"), r);
    assert_eq!(records(&with, "bf16"), records(&inproc, "bf16"));

    // A folder that holds q4 cannot run other precisions.
    let o = study(&q4, &["--precisions", "bf16,q4"], &tmp.join("bad"), &cache);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("holds q4") && stderr(&o).contains("--checkpoint"),
        "{}",
        stderr(&o)
    );
    // A checkpoint must hold the precision it is attached to.
    let arg = format!("q3={q4s}");
    let o = study(&src, &["--checkpoint", &arg], &tmp.join("bad2"), &cache);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("holds q4, not q3"), "{}", stderr(&o));
}

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("ls").flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
    }
    to.to_path_buf()
}

fn load_err(dir: &Path) -> String {
    match engine::source::load(
        &engine::resolve_model(dir.to_str().expect("utf8")).expect("resolves"),
    ) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_mlx_folders_are_named() {
    common::require_mlx_lm("broken_mlx_folders_are_named");
    let tmp = tempdir("mlxbad");
    let src = tmp.join("tiny");
    common::write_tiny_arch(&src, "llama");
    let q4 = tmp.join("tiny-q4");
    convert(&src, &q4, 4);
    let edit_config = |dir: &Path, f: &dyn Fn(&mut serde_json::Value)| {
        let p = dir.join("config.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        f(&mut v);
        std::fs::write(&p, v.to_string()).expect("write");
    };

    // Bits that do not match the packed shapes.
    let d = copy_dir(&q4, &tmp.join("bits"));
    edit_config(&d, &|v| {
        v["quantization"]["bits"] = 8.into();
        v["quantization_config"]["bits"] = 8.into();
    });
    let e = load_err(&d);
    assert!(
        e.contains("scales has shape") && e.contains("bits 8"),
        "{e}"
    );
    // A group size that does not match.
    let d = copy_dir(&q4, &tmp.join("group"));
    edit_config(&d, &|v| {
        v["quantization"]["group_size"] = 32.into();
        v["quantization_config"]["group_size"] = 32.into();
    });
    let e = load_err(&d);
    assert!(
        e.contains("group_size 32") && e.contains("`lm_head`: scales has shape"),
        "{e}"
    );
    // A missing scales tensor.
    let d = copy_dir(&q4, &tmp.join("scales"));
    let st = d.join("model.safetensors");
    let mut ts = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).expect("load");
    ts.remove("model.layers.1.mlp.down_proj.scales")
        .expect("had scales");
    candle_core::safetensors::save(&ts, &st).expect("save");
    let e = load_err(&d);
    assert!(
        e.contains("`model.layers.1.mlp.down_proj.scales` is missing"),
        "{e}"
    );
    // An architecture the engine does not have.
    let d = copy_dir(&q4, &tmp.join("arch"));
    edit_config(&d, &|v| v["model_type"] = "gpt_neox".into());
    let e = load_err(&d);
    assert!(e.contains("model_type `gpt_neox` is not supported"), "{e}");
    // Through the binary, the same message and exit code 2.
    let o = study(&d, &[], &tmp.join("out"), &tmp.join("cache"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("gpt_neox"), "{}", stderr(&o));
}

#[test]
fn smollm2_mlx_lm_convert_equals_in_process_quantization_at_every_bit_width() {
    common::require_mlx_lm("smollm2_mlx_lm_convert_equals_in_process_quantization");
    let tmp = tempdir("mlxsmol");
    let bf16_dir = tmp.join("smollm2-bf16");
    let o = run(
        &[
            "convert",
            "--from",
            common::smollm2().to_str().expect("utf8"),
            "--to",
            bf16_dir.to_str().expect("utf8"),
        ],
        &tmp.join("cache"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let source = candle_core::safetensors::load(
        bf16_dir.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .expect("source");
    for bits in [8u32, 6, 4, 3] {
        let out = tmp.join(format!("smollm2-q{bits}"));
        convert(&bf16_dir, &out, bits);
        let packed = hf::read_packed(&out).expect("reads packed tensors");
        let mut compared = 0;
        for (name, t) in &source {
            if t.rank() != 2 {
                continue;
            }
            let module = name.trim_end_matches(".weight");
            let theirs = packed
                .get(module)
                .unwrap_or_else(|| panic!("q{bits}: {module} not packed by mlx_lm.convert"));
            let (rows, cols) = t.dims2().expect("2-D");
            let w: Vec<bf16> = t.flatten_all().expect("flat").to_vec1().expect("bf16");
            let ours = mlx::quantize(&w, rows, cols, bits, 64).expect("quantizes");
            assert!(
                &ours == theirs,
                "q{bits}: {module} differs from mlx_lm.convert"
            );
            compared += 1;
        }
        assert_eq!(
            compared,
            packed.len(),
            "q{bits}: every packed module compared"
        );
        assert!(compared > 200, "q{bits}: only {compared} tensors");
        std::fs::remove_dir_all(&out).expect("rm");
    }
}

#[test]
fn a_mixed_precision_mlx_folder_loads_as_mlx_lm_reads_it() {
    common::require_mlx_lm("a_mixed_precision_mlx_folder_loads_as_mlx_lm_reads_it");
    let tmp = tempdir("mlxmixed");
    let src = tmp.join("tiny");
    common::write_tiny_arch(&src, "llama");
    let mixed = tmp.join("tiny-mixed");
    common::mlx_convert(&src, &mixed, &["--quant-predicate", "mixed_3_6"]);
    // Per-module overrides in config.json give some modules 3 bits and some 6.
    let packed = hf::read_packed(&mixed).expect("reads");
    let bits: std::collections::BTreeSet<u32> = packed.values().map(|q| q.bits).collect();
    assert!(bits.contains(&3) && bits.contains(&6), "{bits:?}");
    let source =
        candle_core::safetensors::load(src.join("model.safetensors"), &candle_core::Device::Cpu)
            .expect("source");
    for (module, theirs) in &packed {
        let t = &source[&format!("{module}.weight")];
        let (rows, cols) = t.dims2().expect("2-D");
        let w: Vec<bf16> = t.flatten_all().expect("flat").to_vec1().expect("bf16");
        let ours = mlx::quantize(&w, rows, cols, theirs.bits, theirs.group_size).expect("q");
        assert!(&ours == theirs, "{module} at {} bits", theirs.bits);
    }
    // stereoscope's model from the folder computes what mlx-lm's does with the same
    // dequantized weights.
    let loaded = engine::source::load(
        &engine::resolve_model(mixed.to_str().expect("utf8")).expect("resolves"),
    )
    .expect("loads");
    let held = loaded.mlx_quant.as_ref().expect("quantized").precision;
    let tokens = [261u32, 72, 101, 108, 108, 111, 32, 256, 257, 258];
    let ours = logits(&mixed, held);
    let ids: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let out = tmp.join("mixed-logits.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mlx_logits.py");
    let r = Command::new("python3")
        .arg(script)
        .arg(&mixed)
        .arg(ids.join(","))
        .arg(&out)
        .arg("--dense")
        .output()
        .expect("python3");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("read")).expect("json");
    let last = v["logits"]
        .as_array()
        .expect("rows")
        .last()
        .expect("last")
        .clone();
    let row = last.as_array().expect("row");
    assert_eq!(
        row.len(),
        ours.len(),
        "mlx-lm's logits and ours differ in length"
    );
    let max = row
        .iter()
        .zip(&ours)
        .map(|(x, y)| (x.as_f64().expect("number") as f32 - y).abs())
        .fold(0f32, f32::max);
    assert!(
        max <= 1e-4,
        "mixed folder: max |Δ logit| {max} against mlx-lm"
    );
}
