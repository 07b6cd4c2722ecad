//! `stereoscope bench` on the CPU with the real demo model: the program that prints the
//! speed and memory table runs end to end, one row per precision and batch size, and writes
//! the same rows as JSON.

mod common;

#[test]
fn bench_on_the_cpu_prints_a_row_per_precision_and_batch_size_and_writes_them_as_json() {
    let tmp = common::tempdir("bench");
    let model = common::smollm2();
    let bbq = common::bbq_dir();
    let json = tmp.join("rows.json");
    let o = common::run(
        &[
            "bench",
            "--model",
            model.to_str().expect("utf-8"),
            "--bbq-dir",
            bbq.to_str().expect("utf-8"),
            "--categories",
            "Age",
            "--limit",
            "4",
            "--precisions",
            "bf16,q4",
            "--device",
            "cpu",
            "--batch-size",
            "1,4",
            "--json",
            json.to_str().expect("utf-8"),
        ],
        &tmp,
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    let table_rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("| stereoscope"))
        .collect();
    assert_eq!(table_rows.len(), 4, "{out}");
    assert!(
        out.contains("projected study (3 models like this one × 2 precision(s) × 12,148 items"),
        "{out}"
    );

    let text = std::fs::read_to_string(&json).expect("JSON written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON parses");
    let rows = v["rows"].as_array().expect("rows");
    let seen: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["precision"].as_str().unwrap_or("").to_string(),
                r["batch_size"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("bf16".to_string(), 1),
            ("bf16".to_string(), 4),
            ("q4".to_string(), 1),
            ("q4".to_string(), 4)
        ]
    );
    let prompt_tokens = rows[0]["prompt_tokens"].as_u64().expect("prompt tokens");
    assert!(
        prompt_tokens > 4 * 20,
        "{prompt_tokens} prompt tokens for 4 items"
    );
    for r in rows {
        assert_eq!(r["items"], 4, "{r}");
        // Five study seeds per item at every precision (the bench scores the study's order).
        assert_eq!(r["records"], 20, "{r}");
        // The same four prompts at every precision and batch size.
        assert_eq!(r["prompt_tokens"].as_u64(), Some(prompt_tokens), "{r}");
        let computed = r["computed_tokens"].as_u64().expect("computed tokens");
        assert!(computed > 0, "{r}");
        assert!(r["secs"].as_f64().is_some_and(|s| s > 0.0), "{r}");
        assert!(
            r["weight_bytes"].as_u64().is_some_and(|b| b > 100_000_000),
            "{r}"
        );
        // No device memory to read on the CPU; the process's own peak is read.
        assert_eq!(r["peak_device_bytes"], 0, "{r}");
        assert!(r["peak_rss_bytes"].as_u64().is_some_and(|b| b > 0), "{r}");
    }
    assert_eq!(v["cpu_agreement"].as_array().map(Vec::len), Some(0));
}
