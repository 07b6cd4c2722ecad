//! Perplexity, and the KL divergence of each precision's next-token distributions from
//! BF16's, over a corpus of token sequences, in f32 over the full vocabulary.
//!
//! The corpus is either the run's own BBQ prompts (rendered through the model's chat
//! template) or a file: JSONL with a chat `messages` list or a `text` field per line, or
//! plain text. Documents are tokenized, joined and cut into sequences of a fixed length,
//! as the study did (256 sequences of 512 tokens).

use super::model::Transformer;
use super::tokenizer::Tok;
use crate::error::{Error, Result};
use crate::prompt::ChatTemplate;
use candle_core::{D, DType, Tensor};
use std::path::{Path, PathBuf};

/// Token sequences to score, with what they were made from.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// `bbq-prompts` or the file name.
    pub name: String,
    pub sequences: Vec<Vec<u32>>,
    /// sha256 of the sequences' token ids: equal corpora give equal numbers.
    pub sha256: String,
}

/// Join tokenized documents and cut them into at most `max_sequences` sequences of
/// `seq_len` tokens (the last one may be shorter, but has at least two tokens).
pub fn chunk(
    name: &str,
    docs: &[Vec<u32>],
    seq_len: usize,
    max_sequences: usize,
) -> Result<Corpus> {
    if seq_len < 2 {
        return Err(Error::Input(format!(
            "perplexity sequences need at least 2 tokens, not {seq_len}"
        )));
    }
    let all: Vec<u32> = docs.iter().flatten().copied().collect();
    let sequences: Vec<Vec<u32>> = all
        .chunks(seq_len)
        .filter(|c| c.len() >= 2)
        .take(max_sequences)
        .map(<[u32]>::to_vec)
        .collect();
    if sequences.is_empty() {
        return Err(Error::Input(format!(
            "perplexity corpus {name} has fewer than 2 tokens"
        )));
    }
    let bytes: Vec<u8> = sequences
        .iter()
        .flat_map(|s| s.iter().flat_map(|t| t.to_le_bytes()).chain([0xff; 4]))
        .collect();
    use sha2::Digest;
    Ok(Corpus {
        name: name.to_string(),
        sha256: hex::encode(sha2::Sha256::digest(&bytes)),
        sequences,
    })
}

/// One document of a corpus file.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    /// (role, content) turns, rendered with the model's chat template.
    Messages(Vec<(String, String)>),
    Text(String),
}

/// The hub dataset the study measured perplexity on.
pub const TULU: &str = "allenai/tulu-3-sft-mixture";
/// Documents read from a Parquet corpus at most (enough for 256 sequences of 512 tokens).
const MAX_PARQUET_DOCS: usize = 2048;

/// Resolve `--ppl-corpus`: a local file, `hub:OWNER/NAME[@REVISION]` (the first training
/// Parquet file of a hub dataset, fetched into the Hugging Face cache), or `tulu` for the
/// study's corpus.
pub fn resolve_corpus(arg: &str) -> Result<PathBuf> {
    let hub = match arg {
        "tulu" => Some(TULU),
        _ => arg.strip_prefix("hub:"),
    };
    let Some(id) = hub else {
        let p = PathBuf::from(arg);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Input(format!("--ppl-corpus {arg}: no such file")))
        };
    };
    let (id, revision) = match id.split_once('@') {
        Some((i, r)) => (i.to_string(), r.to_string()),
        None => (id.to_string(), "main".to_string()),
    };
    let fail = |what: String| {
        Error::Input(format!(
            "cannot get the perplexity corpus {id}@{revision} from the hub: {what}; pass a local file with --ppl-corpus"
        ))
    };
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let repo = api.repo(hf_hub::Repo::with_revision(
        id.clone(),
        hf_hub::RepoType::Dataset,
        revision.clone(),
    ));
    let info = repo.info().map_err(|e| fail(e.to_string()))?;
    let mut files: Vec<String> = info
        .siblings
        .into_iter()
        .map(|s| s.rfilename)
        .filter(|f| f.ends_with(".parquet"))
        .collect();
    files.sort();
    let file = files
        .iter()
        .find(|f| {
            Path::new(f)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("train"))
        })
        .or(files.first())
        .ok_or_else(|| fail("the dataset has no Parquet file".into()))?;
    repo.get(file).map_err(|e| fail(format!("{file}: {e}")))
}

/// Documents of a Parquet corpus: a `messages` column (list of {role, content}) or a `text`
/// column, the first rows in file order.
fn parquet_docs(path: &Path) -> Result<Vec<Doc>> {
    use arrow::array::{Array, AsArray, ListArray, StructArray};
    use parquet::arrow::ProjectionMask;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let bad = |what: String| Error::Input(format!("perplexity corpus {}: {what}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(e.to_string()))?;
    let fields = builder.parquet_schema().root_schema().get_fields().to_vec();
    let pick = |name: &str| fields.iter().position(|f| f.name() == name);
    let (col, is_chat) = match (pick("messages"), pick("text")) {
        (Some(i), _) => (i, true),
        (None, Some(i)) => (i, false),
        _ => return Err(bad("no `messages` or `text` column".into())),
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), [col]);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(256)
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let text_of = |a: &dyn Array, i: usize| -> Option<String> {
        if a.is_null(i) {
            return None;
        }
        if let Some(s) = a.as_string_opt::<i32>() {
            return Some(s.value(i).to_string());
        }
        a.as_string_opt::<i64>().map(|s| s.value(i).to_string())
    };
    let mut docs = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| bad(e.to_string()))?;
        let column = batch.column(0);
        for row in 0..batch.num_rows() {
            if docs.len() >= MAX_PARQUET_DOCS {
                return Ok(docs);
            }
            if !is_chat {
                if let Some(t) = text_of(column.as_ref(), row) {
                    docs.push(Doc::Text(t));
                }
                continue;
            }
            let list = column
                .as_any()
                .downcast_ref::<ListArray>()
                .ok_or_else(|| bad("`messages` is not a list".into()))?;
            if list.is_null(row) {
                continue;
            }
            let turns = list.value(row);
            let turns = turns
                .as_any()
                .downcast_ref::<StructArray>()
                .ok_or_else(|| bad("`messages` items are not {role, content}".into()))?;
            let (Some(role), Some(content)) = (
                turns.column_by_name("role"),
                turns.column_by_name("content"),
            ) else {
                return Err(bad("`messages` items need `role` and `content`".into()));
            };
            let msgs: Option<Vec<(String, String)>> = (0..turns.len())
                .map(|i| Some((text_of(role.as_ref(), i)?, text_of(content.as_ref(), i)?)))
                .collect();
            if let Some(m) = msgs.filter(|m| !m.is_empty()) {
                docs.push(Doc::Messages(m));
            }
        }
    }
    Ok(docs)
}

/// Parse a corpus file: `.jsonl` lines hold `messages` or `text`; a `.parquet` file has a
/// `messages` or `text` column; any other file is one plain-text document. Errors name the
/// file and line.
pub fn parse_corpus(path: &Path) -> Result<Vec<Doc>> {
    if path.extension().is_some_and(|x| x == "parquet") {
        let docs = parquet_docs(path)?;
        if docs.is_empty() {
            return Err(Error::Input(format!(
                "perplexity corpus {} has no documents",
                path.display()
            )));
        }
        return Ok(docs);
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Input(format!(
            "cannot read perplexity corpus {}: {e}",
            path.display()
        ))
    })?;
    if path.extension().is_none_or(|x| x != "jsonl") {
        return Ok(vec![Doc::Text(text)]);
    }
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Input(format!("{}: invalid JSON: {e}", at())))?;
        if let Some(messages) = v.get("messages") {
            let list = messages
                .as_array()
                .ok_or_else(|| Error::Input(format!("{}: `messages` is not a list", at())))?;
            let mut turns = Vec::with_capacity(list.len());
            for m in list {
                let role = m.get("role").and_then(|r| r.as_str());
                let content = m.get("content").and_then(|c| c.as_str());
                match (role, content) {
                    (Some(r), Some(c)) => turns.push((r.to_string(), c.to_string())),
                    _ => {
                        return Err(Error::Input(format!(
                            "{}: every message needs a string `role` and `content`",
                            at()
                        )));
                    }
                }
            }
            docs.push(Doc::Messages(turns));
        } else if let Some(t) = v.get("text").and_then(|t| t.as_str()) {
            docs.push(Doc::Text(t.to_string()));
        } else {
            return Err(Error::Input(format!(
                "{}: expected a `messages` list or a `text` string",
                at()
            )));
        }
    }
    if docs.is_empty() {
        return Err(Error::Input(format!(
            "perplexity corpus {} has no documents",
            path.display()
        )));
    }
    Ok(docs)
}

/// Read a corpus file into document texts, chat turns rendered with `template` (no
/// generation prompt).
pub fn read_documents(path: &Path, template: &ChatTemplate) -> Result<Vec<String>> {
    parse_corpus(path)?
        .into_iter()
        .map(|d| match d {
            Doc::Text(t) => Ok(t),
            Doc::Messages(turns) => template
                .render_messages(&turns, false)
                .map_err(|e| Error::Input(format!("perplexity corpus {}: {e}", path.display()))),
        })
        .collect()
}

/// Tokenize documents.
pub fn tokenize(tok: &Tok, docs: &[String]) -> Result<Vec<Vec<u32>>> {
    docs.iter().map(|d| tok.encode(d)).collect()
}

/// Sums over the scored positions of a corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    /// Positions scored (each predicts the next token of its sequence).
    pub tokens: u64,
    /// Σ −log p(next token) at this precision.
    pub nll: f64,
    /// Σ KL(P_bf16 ‖ P_precision) over the full vocabulary (0 for BF16 itself).
    pub kld: f64,
    /// Positions whose most probable token is BF16's.
    pub top1_same: u64,
}

impl Sums {
    pub fn perplexity(&self) -> f64 {
        (self.nll / self.tokens as f64).exp()
    }
    pub fn mean_kld(&self) -> f64 {
        self.kld / self.tokens as f64
    }
}

/// Score `corpus` with `model` against `bf16` (pass `None` to score BF16 itself). Both run
/// every sequence from an empty context.
pub fn measure(bf16: &Transformer, model: Option<&Transformer>, corpus: &Corpus) -> Result<Sums> {
    let mut s = Sums::default();
    for seq in &corpus.sequences {
        let n = seq.len() - 1;
        let inputs = &seq[..n];
        let log_p = |m: &Transformer| -> Result<Tensor> {
            Ok(candle_nn::ops::log_softmax(
                &m.forward_all(inputs)?.to_dtype(DType::F32)?,
                D::Minus1,
            )?)
        };
        let lb = log_p(bf16)?;
        let lq = match model {
            Some(m) => log_p(m)?,
            None => lb.clone(),
        };
        let targets = Tensor::new(&seq[1..], lq.device())?.unsqueeze(1)?;
        let nll: f32 = lq.gather(&targets, 1)?.sum_all()?.to_scalar()?;
        let kld: f32 = if model.is_some() {
            (lb.exp()? * (&lb - &lq)?)?.sum_all()?.to_scalar()?
        } else {
            0.0
        };
        let same: Vec<u8> = lb.argmax(1)?.eq(&lq.argmax(1)?)?.to_vec1()?;
        s.tokens += n as u64;
        s.nll -= nll as f64;
        s.kld += kld as f64;
        s.top1_same += same.iter().map(|&x| x as u64).sum::<u64>();
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_joined_and_cut_into_sequences() {
        let docs = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7, 8, 9]];
        let c = chunk("x", &docs, 4, 10).expect("chunks");
        assert_eq!(c.sequences, vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]]);
        let c = chunk("x", &docs, 4, 1).expect("chunks");
        assert_eq!(c.sequences, vec![vec![1, 2, 3, 4]]);
        let c2 = chunk("x", &[vec![1, 2, 3], vec![4, 5, 6]], 5, 10).expect("chunks");
        assert_eq!(
            c2.sequences,
            vec![vec![1, 2, 3, 4, 5]],
            "a 1-token tail is dropped"
        );
        assert_ne!(c.sha256, c2.sha256);
        assert!(chunk("x", &[vec![1]], 4, 10).is_err());
        assert!(chunk("x", &docs, 1, 10).is_err());
    }

    #[test]
    fn sums_give_perplexity_and_mean_kld() {
        let s = Sums {
            tokens: 4,
            nll: 4.0 * 2f64.ln(),
            kld: 0.2,
            top1_same: 3,
        };
        assert!((s.perplexity() - 2.0).abs() < 1e-12);
        assert!((s.mean_kld() - 0.05).abs() < 1e-12);
    }
}
