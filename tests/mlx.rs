//! MLX affine quantization against fixtures made by `mx.quantize` / `mx.dequantize`
//! (scripts/mlx_fixtures.py): packed words, scales, biases and dequantized values, bit for
//! bit, for every bit width and group size. When MLX is installed the fixtures are
//! regenerated first, so the comparison is against the MLX on this machine.

use half::bf16;
use std::path::{Path, PathBuf};
use stereoscope::engine::mlx;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mlx")
}

fn mlx_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import mlx.core"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn bf16s(v: &serde_json::Value) -> Vec<bf16> {
    v.as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|x| bf16::from_bits(x.as_u64().expect("bits") as u16))
        })
        .collect()
}

fn check_dir(dir: &Path) -> usize {
    let mut n = 0;
    for bits in [2u32, 3, 4, 5, 6, 8] {
        for group in [32usize, 64, 128] {
            let path = dir.join(format!("b{bits}_g{group}.json"));
            let f: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture"))
                    .expect("json");
            let (rows, cols) = (
                f["shape"][0].as_u64().expect("r") as usize,
                f["shape"][1].as_u64().expect("c") as usize,
            );
            let w = bf16s(&f["w_bf16"]);
            let q = mlx::quantize(&w, rows, cols, bits, group).expect("quantizes");
            let words: Vec<u32> = f["words"]
                .as_array()
                .expect("rows")
                .iter()
                .flat_map(|r| {
                    r.as_array()
                        .expect("row")
                        .iter()
                        .map(|x| x.as_u64().expect("word") as u32)
                })
                .collect();
            assert_eq!(q.words, words, "words, {bits} bits, group {group}");
            assert_eq!(
                q.scales,
                bf16s(&f["scales_bf16"]),
                "scales, {bits} bits, group {group}"
            );
            assert_eq!(
                q.biases,
                bf16s(&f["biases_bf16"]),
                "biases, {bits} bits, group {group}"
            );
            let want = bf16s(&f["dequantized_bf16"]);
            let got = q.dequantize();
            let bad = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(
                bad, 0,
                "dequantized values differ in {bad} places, {bits} bits, group {group}"
            );
            n += 1;
        }
    }
    n
}

#[test]
fn committed_fixtures_match_bit_for_bit() {
    assert_eq!(check_dir(&fixture_dir()), 18);
}

#[test]
fn fixtures_regenerated_by_the_installed_mlx_match() {
    assert!(
        mlx_available(),
        "this test regenerates the fixtures with MLX, which is not installed: pip install \"mlx[cpu]\" (scripts/test does)"
    );
    let dir = std::env::temp_dir().join(format!("stereoscope-mlx-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mlx_fixtures.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(&dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(check_dir(&dir), 18);
}

#[test]
fn bad_shapes_are_named() {
    let w = vec![bf16::ZERO; 100];
    let e = mlx::quantize(&w, 1, 100, 4, 64)
        .expect_err("100 is not a multiple of 64")
        .to_string();
    assert!(e.contains("100") && e.contains("64"), "{e}");
    let e = mlx::quantize(&[bf16::ZERO; 64], 1, 64, 7, 64)
        .expect_err("7 bits")
        .to_string();
    assert!(e.contains("7-bit"), "{e}");
}
