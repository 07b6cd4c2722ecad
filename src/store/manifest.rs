//! `manifest.json` (and a shard's `manifest-sI.json`) as typed structs: the plan a folder was
//! made by, the tool, the selection, the runs, each model's entry and every finished part
//! with its row count and sha256. A manifest of another format version is refused with a
//! message naming the file; version 1 (before parts were listed) is read, its parts checked
//! by name and rows rather than by hash.

use super::{Shard, store_err};
use crate::error::Result;
use crate::vocab::{Compute, Precision, Scheme};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The version of the folder layout, columns and manifest.
pub const FORMAT_VERSION: u32 = 2;

/// The oldest format version this stereoscope reads.
pub const OLDEST_READ: u32 = 1;

/// A model as the plan names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanModel {
    pub slug: String,
    pub sha256: String,
    /// Precision → sha256 of the prebuilt checkpoint used for it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub checkpoints: BTreeMap<String, String>,
}

/// The item selection's identity: how many and the sha256 of their keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanItems {
    pub count: usize,
    pub sha256: String,
}

/// What defines a run: two runs resume each other only when their plans are equal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub models: Vec<PlanModel>,
    pub scheme: Scheme,
    pub precisions: Vec<Precision>,
    pub seeds: Vec<u64>,
    pub compute: Compute,
    /// The prompt (system message, user template, chat template) as used.
    pub protocol: Value,
    /// The selection flags (categories, conditions, limit).
    pub selection: Value,
    pub items: PlanItems,
    pub part_size: usize,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub noise_seeds: Vec<u64>,
    /// Option orders besides the study's alone (absent: `012` only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub option_orders: Vec<String>,
}

impl Plan {
    /// The plan as JSON (what `plan_diff` and the default folder name read).
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The option orders of every item: the study's alone unless the plan lists others.
    pub fn orders(&self) -> Vec<String> {
        match self.option_orders.is_empty() {
            true => vec![crate::rules::STUDY_ORDER.to_string()],
            false => self.option_orders.clone(),
        }
    }

    /// The number of parts of every model and precision.
    pub fn part_count(&self) -> usize {
        self.items.count.div_ceil(self.part_size.max(1))
    }

    /// The sha256 of item keys (`category:example_id`, comma-joined), as `items.sha256`.
    pub fn items_sha256<'a>(keys: impl Iterator<Item = (&'a str, i64)>) -> String {
        use sha2::Digest;
        let joined: Vec<String> = keys.map(|(c, id)| format!("{c}:{id}")).collect();
        hex::encode(sha2::Sha256::digest(joined.join(",").as_bytes()))
    }
}

/// The tool that wrote a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    pub version: String,
    pub git_revision: String,
}

impl Tool {
    pub fn this() -> Tool {
        Tool {
            name: "stereoscope".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            git_revision: env!("STEREOSCOPE_GIT_REV").into(),
        }
    }
}

/// A finished part as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartEntry {
    pub rows: u64,
    pub sha256: String,
    /// Prompts per forward pass the part was scored with (`None`: unknown, as in
    /// manifests written before it was recorded). On a GPU a record's last bits depend on
    /// which prompts share its batch, so a resumed run scores its remaining parts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u64>,
}

/// A results folder's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    pub tool: Tool,
    pub plan: Plan,
    #[serde(default)]
    pub selection: Value,
    /// One entry per run (started, finished, device; the shard after a merge).
    #[serde(default)]
    pub runs: Vec<Value>,
    /// Model slug → what was loaded (source, tokenizer, letters, precisions built,
    /// perplexity summary).
    #[serde(default)]
    pub models: BTreeMap<String, Value>,
    /// Finished parts: path under `records/` → rows and sha256. Empty in version 1.
    #[serde(default)]
    pub parts: BTreeMap<String, PartEntry>,
    /// Where a merged folder's shards came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<Value>,
}

impl Manifest {
    /// A new manifest of `plan`, written by this tool.
    pub fn new(plan: Plan, shard: Option<Shard>) -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            shard,
            tool: Tool::this(),
            plan,
            selection: Value::Null,
            runs: Vec::new(),
            models: BTreeMap::new(),
            parts: BTreeMap::new(),
            merged: None,
        }
    }

    /// Whether the manifest lists its parts (format 2 on); version 1 did not.
    pub fn lists_parts(&self) -> bool {
        self.format_version >= 2
    }

    /// A model's entry, made empty when absent.
    pub fn model_entry(&mut self, slug: &str) -> &mut Value {
        let e = self
            .models
            .entry(slug.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        if !e.is_object() {
            *e = Value::Object(Default::default());
        }
        e
    }
}

/// Read a manifest, checking its format version and fields; errors name the file.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let text =
        std::fs::read_to_string(path).map_err(|e| store_err(path, format!("cannot read: {e}")))?;
    let v: Value =
        serde_json::from_str(&text).map_err(|e| store_err(path, format!("invalid JSON: {e}")))?;
    let version = v.get("format_version").and_then(|x| x.as_u64());
    match version {
        Some(n) if (OLDEST_READ as u64..=FORMAT_VERSION as u64).contains(&n) => {}
        Some(n) if n > FORMAT_VERSION as u64 => {
            return Err(store_err(
                path,
                format!(
                    "format_version {n} was written by a newer stereoscope; this one reads {OLDEST_READ}..={FORMAT_VERSION}: upgrade stereoscope"
                ),
            ));
        }
        Some(n) => {
            return Err(store_err(
                path,
                format!(
                    "format_version {n} is not one this stereoscope reads ({OLDEST_READ}..={FORMAT_VERSION})"
                ),
            ));
        }
        None => {
            return Err(store_err(
                path,
                "no format_version: not a stereoscope manifest",
            ));
        }
    }
    serde_json::from_value(v).map_err(|e| store_err(path, format!("not a valid manifest: {e}")))
}

/// Write a manifest to `path` atomically (a hidden temporary file renamed into place).
pub fn write_manifest_at(path: &Path, manifest: &Manifest) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| store_err(path, "no parent folder"))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("manifest.json");
    let tmp = dir.join(format!(".{name}.{}", super::tmp_suffix()));
    let text = serde_json::to_string_pretty(manifest).map_err(|e| store_err(path, e))?;
    std::fs::write(&tmp, text).map_err(|e| store_err(&tmp, format!("cannot write: {e}")))?;
    super::failpoint::hit("manifest-tmp");
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        store_err(path, format!("cannot rename into place: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            models: vec![PlanModel {
                slug: "m".into(),
                sha256: "ab".into(),
                checkpoints: BTreeMap::new(),
            }],
            scheme: Scheme::Mlx,
            precisions: vec![Precision::Bf16, Precision::Q4],
            seeds: vec![42, 123],
            compute: Compute::Dequant,
            protocol: serde_json::json!({"name": "paper"}),
            selection: serde_json::json!({"limit": 3}),
            items: PlanItems {
                count: 3,
                sha256: "cd".into(),
            },
            part_size: 2,
            noise_seeds: vec![],
            option_orders: vec![],
        }
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("stereoscope-manifest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("tmp");
        d
    }

    #[test]
    fn a_manifest_round_trips_and_its_plan_serializes_as_version_one_did() {
        let d = tmp("round");
        let mut m = Manifest::new(plan(), None);
        m.parts.insert(
            "model=m/scheme=mlx/precision=bf16/part-00000.parquet".into(),
            PartEntry {
                rows: 4,
                sha256: "ef".into(),
                batch_size: Some(128),
            },
        );
        let p = d.join("manifest.json");
        write_manifest_at(&p, &m).expect("write");
        assert_eq!(read_manifest(&p).expect("read"), m);
        // The keys and values version 1 wrote for the same plan (no empty optional keys).
        let v = plan().to_value();
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        assert_eq!(
            keys,
            [
                "compute",
                "items",
                "models",
                "part_size",
                "precisions",
                "protocol",
                "scheme",
                "seeds",
                "selection"
            ]
        );
        assert_eq!(v["precisions"], serde_json::json!(["bf16", "q4"]));
        assert_eq!(v["scheme"], "mlx");
        assert_eq!(
            v["models"][0],
            serde_json::json!({"slug": "m", "sha256": "ab"})
        );
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(&d).expect("dir").flatten().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn other_versions_and_broken_manifests_are_refused_naming_the_file() {
        let d = tmp("versions");
        let p = d.join("manifest.json");
        let mut v = serde_json::to_value(Manifest::new(plan(), None)).expect("json");
        for (version, needle) in [
            (serde_json::json!(3), "newer stereoscope"),
            (serde_json::json!(0), "format_version 0"),
            (Value::Null, "no format_version"),
        ] {
            v["format_version"] = version;
            std::fs::write(&p, v.to_string()).expect("write");
            let e = read_manifest(&p).expect_err("refused").to_string();
            assert!(e.contains(needle) && e.contains("manifest.json"), "{e}");
        }
        v["format_version"] = serde_json::json!(1);
        v["plan"]["precisions"] = serde_json::json!(["bf16", "q5"]);
        std::fs::write(&p, v.to_string()).expect("write");
        let e = read_manifest(&p).expect_err("refused").to_string();
        assert!(
            e.contains("not a valid manifest") && e.contains("q5"),
            "{e}"
        );
        // Version 1 is read; it lists no parts.
        v["plan"]["precisions"] = serde_json::json!(["bf16"]);
        std::fs::write(&p, v.to_string()).expect("write");
        let m = read_manifest(&p).expect("version 1 reads");
        assert!(!m.lists_parts());
    }

    #[test]
    fn a_part_listed_without_its_batch_size_reads_as_unknown() {
        let d = tmp("batch");
        let p = d.join("manifest.json");
        let mut v = serde_json::to_value(Manifest::new(plan(), None)).expect("json");
        let rel = "model=m/scheme=mlx/precision=bf16/part-00000.parquet";
        // As written before the batch size was recorded.
        v["parts"] = serde_json::json!({ rel: {"rows": 4, "sha256": "ef"} });
        std::fs::write(&p, v.to_string()).expect("write");
        let m = read_manifest(&p).expect("read");
        assert_eq!(m.parts[rel].batch_size, None);
        // Written back, an unknown batch size stays absent; a known one is kept.
        let text = serde_json::to_string(&m).expect("json");
        assert!(!text.contains("batch_size"), "{text}");
        v["parts"][rel]["batch_size"] = serde_json::json!(64);
        std::fs::write(&p, v.to_string()).expect("write");
        assert_eq!(
            read_manifest(&p).expect("read").parts[rel].batch_size,
            Some(64)
        );
    }
}
