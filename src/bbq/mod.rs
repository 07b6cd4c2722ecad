//! BBQ data: reading and validating the category JSONL files, resolving each item's option
//! roles (biased / anti / unknown), locating the data (flag, environment, cache, download) and
//! selecting items (categories, context conditions, a deterministic stratified `--limit`).
//!
//! Invariant: every [`Item`] handed on has exactly one biased and one unknown option, and
//! they differ. An item for which the rules cannot find them is an error naming file and line.

use crate::error::{Error, Result};
pub use crate::vocab::{Conditions, Role};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The categories of the study being reproduced (Rath & Maliakkal, 2026).
pub const STUDY_CATEGORIES: [&str; 5] = [
    "Age",
    "Gender_identity",
    "Race_ethnicity",
    "Religion",
    "SES",
];

/// Every category file of the public BBQ repository.
pub const ALL_CATEGORIES: [&str; 11] = [
    "Age",
    "Disability_status",
    "Gender_identity",
    "Nationality",
    "Physical_appearance",
    "Race_ethnicity",
    "Race_x_SES",
    "Race_x_gender",
    "Religion",
    "SES",
    "Sexual_orientation",
];

/// Where the category files are downloaded from when they are not found locally.
pub const DEFAULT_BASE_URL: &str =
    "https://raw.githubusercontent.com/nyu-mll/BBQ/bea11bd97d79217245b5871acd247b9d6eb24598";

/// One BBQ question with its resolved option roles.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
pub struct Item {
    pub category: String,
    pub example_id: i64,
    pub context_condition: String,
    pub question_polarity: String,
    pub context: String,
    pub question: String,
    pub answers: [String; 3],
    /// Index of the correct answer (always the unknown option in ambiguous contexts).
    pub label: u8,
    pub biased_index: u8,
    pub unknown_index: u8,
}

impl Item {
    /// The role of option `answer` (0..=2), or `Invalid` when there is no answer.
    pub fn role_of(&self, answer: Option<u8>) -> Role {
        match answer {
            None => Role::Invalid,
            Some(a) if a == self.biased_index => Role::Biased,
            Some(a) if a == self.unknown_index => Role::Unknown,
            Some(_) => Role::Anti,
        }
    }

    /// Index of the anti-stereotypical option.
    pub fn anti_index(&self) -> u8 {
        3 - self.biased_index - self.unknown_index
    }
}

#[derive(Deserialize)]
struct RawItem {
    example_id: i64,
    question_polarity: String,
    context_condition: String,
    category: String,
    answer_info: HashMap<String, Vec<String>>,
    additional_metadata: RawMeta,
    context: String,
    question: String,
    ans0: String,
    ans1: String,
    ans2: String,
    label: u8,
}

#[derive(Deserialize)]
struct RawMeta {
    #[serde(default)]
    stereotyped_groups: Vec<String>,
}

fn norm(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(|c| c.to_lowercase())
        .collect()
}

fn gender_code(word: &str) -> Option<&'static str> {
    match word {
        "woman" | "women" | "girl" | "girls" | "female" => Some("f"),
        "man" | "men" | "boy" | "boys" | "male" => Some("m"),
        _ => None,
    }
}

/// Every normalized label an option answers to: its text, its group, the parts of an
/// intersectional group ("F-Black"), and the gender code of gendered words.
fn option_labels(text: &str, group: &str) -> HashSet<String> {
    let mut labels = HashSet::from([norm(text), norm(group)]);
    for part in group.split('-') {
        labels.insert(norm(part));
    }
    for word in text.split_whitespace().chain(std::iter::once(group)) {
        if let Some(code) = gender_code(&word.to_lowercase()) {
            labels.insert(code.to_string());
        }
    }
    labels.remove("");
    labels
}

/// A located problem in a BBQ file.
fn bad(file: &Path, line: usize, what: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}:{}: {}", file.display(), line, what))
}

/// `target_loc` overrides from `additional_metadata.csv`: (category, example_id) → index.
pub type TargetLocs = HashMap<(String, i64), u8>;

/// Resolve one JSONL line into an [`Item`].
fn resolve(raw: RawItem, file: &Path, line: usize, targets: &TargetLocs) -> Result<Item> {
    let infos = answer_infos(&raw, file, line)?;
    let unknown: Vec<u8> = (0..3u8)
        .filter(|&k| infos[k as usize].1.eq_ignore_ascii_case("unknown"))
        .collect();
    let [unknown_index] = unknown[..] else {
        return Err(bad(
            file,
            line,
            format!(
                "item {} {}: expected exactly one unknown option, found {}",
                raw.category,
                raw.example_id,
                unknown.len()
            ),
        ));
    };
    if raw.label > 2 {
        return Err(bad(
            file,
            line,
            format!("label {} is not 0, 1 or 2", raw.label),
        ));
    }
    let biased_index = match targets.get(&(raw.category.clone(), raw.example_id)) {
        Some(&t) => t,
        None => biased_from_groups(&raw, &infos, unknown_index, file, line)?,
    };
    if biased_index > 2 || biased_index == unknown_index {
        return Err(bad(
            file,
            line,
            format!(
                "item {} {}: biased option resolves to the unknown one",
                raw.category, raw.example_id
            ),
        ));
    }
    Ok(Item {
        category: raw.category,
        example_id: raw.example_id,
        context_condition: raw.context_condition,
        question_polarity: raw.question_polarity,
        context: raw.context,
        question: raw.question,
        answers: [raw.ans0, raw.ans1, raw.ans2],
        label: raw.label,
        biased_index,
        unknown_index,
    })
}

/// The `[text, group]` of `ans0`, `ans1` and `ans2` from `answer_info`.
fn answer_infos(raw: &RawItem, file: &Path, line: usize) -> Result<Vec<(String, String)>> {
    let mut infos = Vec::with_capacity(3);
    for k in 0..3 {
        let key = format!("ans{k}");
        let info = raw
            .answer_info
            .get(&key)
            .ok_or_else(|| bad(file, line, format!("answer_info has no `{key}`")))?;
        if info.len() < 2 {
            return Err(bad(
                file,
                line,
                format!("answer_info.{key} needs [text, group]"),
            ));
        }
        infos.push((info[0].clone(), info[1].clone()));
    }
    Ok(infos)
}

/// The biased option when `additional_metadata.csv` gives none: the one option (besides
/// the unknown one) that matches `stereotyped_groups` for a negative question, the other
/// one for a non-negative question.
fn biased_from_groups(
    raw: &RawItem,
    infos: &[(String, String)],
    unknown_index: u8,
    file: &Path,
    line: usize,
) -> Result<u8> {
    let stereotyped: HashSet<String> = raw
        .additional_metadata
        .stereotyped_groups
        .iter()
        .map(|g| norm(g))
        .collect();
    let others: Vec<u8> = (0..3u8).filter(|&k| k != unknown_index).collect();
    let matching: Vec<u8> = others
        .iter()
        .copied()
        .filter(|&k| {
            let (text, group) = &infos[k as usize];
            !option_labels(text, group).is_disjoint(&stereotyped)
        })
        .collect();
    let [target] = matching[..] else {
        return Err(bad(
            file,
            line,
            format!(
                "item {} {}: {} options match stereotyped_groups {:?}; expected one",
                raw.category,
                raw.example_id,
                matching.len(),
                raw.additional_metadata.stereotyped_groups
            ),
        ));
    };
    match raw.question_polarity.as_str() {
        "neg" => Ok(target),
        "nonneg" => Ok(others
            .iter()
            .copied()
            .find(|&k| k != target)
            .unwrap_or(target)),
        other => Err(bad(
            file,
            line,
            format!("question_polarity must be neg or nonneg, not `{other}`"),
        )),
    }
}

/// Read and resolve every item of one category file; the first bad line is an error naming
/// the file and line.
pub fn read_category_file(path: &Path, targets: &TargetLocs) -> Result<Vec<Item>> {
    read_category(path, targets, false).map(|(items, _)| items)
}

/// Read one category file. With `skip_bad`, a line that does not parse or resolve (or repeats
/// an example_id) is left out and described in the second list instead of stopping the read.
pub fn read_category(
    path: &Path,
    targets: &TargetLocs,
    skip_bad: bool,
) -> Result<(Vec<Item>, Vec<String>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Input(format!("cannot read BBQ file {}: {e}", path.display())))?;
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    for (i, raw_line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_no = i + 1;
        let item = line_text(raw_line, path, line_no).and_then(|line| {
            if line.trim().is_empty() {
                return Ok(None);
            }
            serde_json::from_str::<RawItem>(line)
                .map_err(|e| bad(path, line_no, e))
                .map(Some)
        });
        let item = match item {
            Ok(None) => continue,
            Ok(Some(raw)) => Ok(raw),
            Err(e) => Err(e),
        };
        let item = item
            .and_then(|raw| resolve(raw, path, line_no, targets))
            .and_then(|item| {
                if seen.insert(item.example_id) {
                    Ok(item)
                } else {
                    Err(bad(
                        path,
                        line_no,
                        format!("duplicate example_id {}", item.example_id),
                    ))
                }
            });
        match item {
            Ok(item) => items.push(item),
            Err(e) if skip_bad => skipped.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    if items.is_empty() {
        return Err(Error::Input(format!(
            "{}: no items ({})",
            path.display(),
            match skipped.len() {
                0 => "the file is empty".to_string(),
                n => format!("all {n} line(s) were left out as malformed"),
            }
        )));
    }
    Ok((items, skipped))
}

/// One line of a JSONL file as text: valid UTF-8, with no byte order mark, its `\r` end
/// removed; else an error naming the file and line.
fn line_text<'a>(raw: &'a [u8], path: &Path, line_no: usize) -> Result<&'a str> {
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    if raw.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err(bad(
            path,
            line_no,
            "starts with a byte order mark (U+FEFF); save the file as UTF-8 without BOM",
        ));
    }
    std::str::from_utf8(raw).map_err(|e| {
        bad(
            path,
            line_no,
            format!(
                "is not valid UTF-8 (invalid byte at column {})",
                e.valid_up_to() + 1
            ),
        )
    })
}

/// Read `target_loc` from BBQ's `additional_metadata.csv` (columns found by header name).
pub fn read_target_locs(path: &Path) -> Result<TargetLocs> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .map(split_csv_line)
        .ok_or_else(|| bad(path, 1, "empty file"))?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| bad(path, 1, format!("no `{name}` column")))
    };
    let (c_cat, c_id, c_target) = (col("category")?, col("example_id")?, col("target_loc")?);
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate() {
        let fields = split_csv_line(line);
        let get = |c: usize| fields.get(c).map(|s| s.trim()).unwrap_or("");
        let (cat, id, target) = (get(c_cat), get(c_id), get(c_target));
        // Rows without a usable target (BBQ leaves some blank or NA) keep the rule's answer.
        let (Ok(id), Ok(target)) = (id.parse::<i64>(), target.parse::<f64>()) else {
            continue;
        };
        if !(0.0..=2.0).contains(&target) {
            return Err(bad(
                path,
                i + 2,
                format!("target_loc {target} is not 0, 1 or 2"),
            ));
        }
        out.insert((cat.to_string(), id), target as u8);
    }
    Ok(out)
}

fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

/// A folder of BBQ files, as found.
#[derive(Debug, Clone)]
pub struct BbqDir {
    pub path: PathBuf,
}

impl BbqDir {
    fn metadata_csv(&self) -> Option<PathBuf> {
        [
            self.path.join("supplemental/additional_metadata.csv"),
            self.path.join("additional_metadata.csv"),
        ]
        .into_iter()
        .find(|p| p.is_file())
    }

    pub fn category_file(&self, category: &str) -> PathBuf {
        self.path.join(format!("{category}.jsonl"))
    }
}

/// The items chosen for a run, with the checksums of the files they came from.
#[derive(Debug, Clone)]
pub struct Selection {
    pub items: Vec<Item>,
    /// file name → sha256 of every file read.
    pub checksums: BTreeMap<String, String>,
    /// Requested categories with no file.
    pub missing: Vec<String>,
    /// Lines left out with `skip_bad`, each naming its file and line.
    pub skipped: Vec<String>,
}

/// What to select from a BBQ folder.
#[derive(Debug, Clone)]
pub struct SelectSpec {
    pub categories: Vec<String>,
    pub conditions: Conditions,
    pub limit: Option<usize>,
    /// Leave out malformed lines (counted in `Selection::skipped`) instead of stopping.
    pub skip_bad: bool,
}

/// The sha256 of a file, hex encoded.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Input(format!("cannot read {}: {e}", path.display())))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Check category names against BBQ's list.
pub fn validate_categories(categories: &[String]) -> Result<()> {
    for c in categories {
        if !ALL_CATEGORIES.contains(&c.as_str()) {
            return Err(Error::Input(format!(
                "unknown BBQ category `{c}`; known: {}",
                ALL_CATEGORIES.join(", ")
            )));
        }
    }
    Ok(())
}

/// Read the requested categories from `dir` and select items.
pub fn select(dir: &BbqDir, spec: &SelectSpec) -> Result<Selection> {
    validate_categories(&spec.categories)?;
    let mut checksums = BTreeMap::new();
    let targets = match dir.metadata_csv() {
        Some(csv) => {
            checksums.insert("additional_metadata.csv".to_string(), sha256_file(&csv)?);
            read_target_locs(&csv)?
        }
        None => HashMap::new(),
    };
    let mut by_category = Vec::new();
    let mut missing = Vec::new();
    let mut skipped = Vec::new();
    for category in &spec.categories {
        let file = dir.category_file(category);
        if !file.is_file() {
            missing.push(category.clone());
            continue;
        }
        checksums.insert(format!("{category}.jsonl"), sha256_file(&file)?);
        let (items, bad_lines) = read_category(&file, &targets, spec.skip_bad)?;
        skipped.extend(bad_lines);
        let items: Vec<Item> = items
            .into_iter()
            .filter(|it| spec.conditions.admits(&it.context_condition))
            .collect();
        by_category.push(items);
    }
    if by_category.is_empty() {
        return Err(Error::Input(format!(
            "none of the categories {} has a file in {}",
            spec.categories.join(", "),
            dir.path.display()
        )));
    }
    let items = match spec.limit {
        Some(limit) => stratified_sample(by_category, limit),
        None => by_category.into_iter().flatten().collect(),
    };
    Ok(Selection {
        items,
        checksums,
        missing,
        skipped,
    })
}

fn sample_key(item: &Item) -> [u8; 32] {
    Sha256::digest(format!("stereoscope-sample|{}|{}", item.category, item.example_id).as_bytes())
        .into()
}

/// Take `limit` items, split over categories in proportion to their sizes (largest
/// remainders), each category's share chosen by a fixed hash order; the result is sorted by
/// category and example_id. Deterministic: the same files and limit give the same items.
pub fn stratified_sample(by_category: Vec<Vec<Item>>, limit: usize) -> Vec<Item> {
    let total: usize = by_category.iter().map(Vec::len).sum();
    if limit >= total {
        return by_category.into_iter().flatten().collect();
    }
    let exact: Vec<f64> = by_category
        .iter()
        .map(|c| c.len() as f64 * limit as f64 / total as f64)
        .collect();
    let mut shares: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut left = limit - shares.iter().sum::<usize>();
    for &c in order.iter().cycle().take(order.len() * 2) {
        if left == 0 {
            break;
        }
        if shares[c] < by_category[c].len() {
            shares[c] += 1;
            left -= 1;
        }
    }
    let mut out = Vec::with_capacity(limit);
    for (mut items, share) in by_category.into_iter().zip(shares) {
        items.sort_by_key(sample_key);
        items.truncate(share);
        items.sort_by_key(|it| it.example_id);
        out.extend(items);
    }
    out
}

pub mod locate;
pub use locate::{LocateSpec, cache_dir, locate};
