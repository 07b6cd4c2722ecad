//! `perplexity.parquet`: one row per (model, scheme, precision) with the perplexity of a
//! corpus and the mean KL divergence of the next-token distributions from BF16's.

use super::table::{Column, Get, Table};
use super::{ResultsDir, read_batches};
use crate::error::{Error, Result};
use arrow::array::{Array, Float64Array, Int64Array, StringArray};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One row of `perplexity.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PplRow {
    pub model: String,
    pub scheme: String,
    pub precision: String,
    /// `bbq-prompts` or the corpus file's name.
    pub corpus: String,
    /// sha256 of the scored token ids.
    pub corpus_sha256: String,
    pub sequences: u64,
    pub seq_len: u64,
    /// Positions scored (each predicts the next token).
    pub tokens: u64,
    /// Mean negative log-likelihood per token (nats).
    pub nll: f64,
    pub perplexity: f64,
    /// Perplexity change against BF16 of the same model and scheme, in percent.
    pub delta_ppl_pct: Option<f64>,
    /// Mean KL(P_bf16 ‖ P_precision) per token over the full vocabulary (nats).
    pub mean_kld: f64,
    /// Share of positions whose most probable next token is BF16's.
    pub top1_agreement: f64,
}

fn path(dir: &ResultsDir) -> PathBuf {
    dir.root.join("perplexity.parquet")
}

/// The rows on disk (none when the file is absent).
pub fn read(dir: &ResultsDir) -> Result<Vec<PplRow>> {
    let p = path(dir);
    if !p.is_file() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for b in read_batches(&p)? {
        let col = |n: &str| {
            b.column_by_name(n)
                .ok_or_else(|| Error::Store(format!("{}: no column `{n}`", p.display())))
        };
        let s = |n: &str| -> Result<StringArray> {
            col(n)?
                .as_any()
                .downcast_ref::<StringArray>()
                .cloned()
                .ok_or_else(|| Error::Store(format!("{}: `{n}` is not text", p.display())))
        };
        let i = |n: &str| -> Result<Int64Array> {
            col(n)?
                .as_any()
                .downcast_ref::<Int64Array>()
                .cloned()
                .ok_or_else(|| Error::Store(format!("{}: `{n}` is not an integer", p.display())))
        };
        let f = |n: &str| -> Result<Float64Array> {
            col(n)?
                .as_any()
                .downcast_ref::<Float64Array>()
                .cloned()
                .ok_or_else(|| Error::Store(format!("{}: `{n}` is not a number", p.display())))
        };
        let (model, scheme, precision, corpus, sha) = (
            s("model")?,
            s("scheme")?,
            s("precision")?,
            s("corpus")?,
            s("corpus_sha256")?,
        );
        let (sequences, seq_len, tokens) = (i("sequences")?, i("seq_len")?, i("tokens")?);
        let (nll, ppl, kld, top1) = (
            f("nll")?,
            f("perplexity")?,
            f("mean_kld")?,
            f("top1_agreement")?,
        );
        // Files written before the schema was declared store a column with no value at all
        // (BF16 alone) as text.
        let delta = f("delta_ppl_pct").ok();
        for r in 0..b.num_rows() {
            out.push(PplRow {
                model: model.value(r).into(),
                scheme: scheme.value(r).into(),
                precision: precision.value(r).into(),
                corpus: corpus.value(r).into(),
                corpus_sha256: sha.value(r).into(),
                sequences: sequences.value(r) as u64,
                seq_len: seq_len.value(r) as u64,
                tokens: tokens.value(r) as u64,
                nll: nll.value(r),
                perplexity: ppl.value(r),
                delta_ppl_pct: delta.as_ref().filter(|d| !d.is_null(r)).map(|d| d.value(r)),
                mean_kld: kld.value(r),
                top1_agreement: top1.value(r),
            });
        }
    }
    Ok(out)
}

/// Replace the rows of `model` × `scheme` with `rows`, keeping the other models' rows.
pub fn write(dir: &ResultsDir, model: &str, scheme: &str, rows: &[PplRow]) -> Result<()> {
    let mut all: Vec<PplRow> = read(dir)?
        .into_iter()
        .filter(|r| !(r.model == model && r.scheme == scheme))
        .collect();
    all.extend(rows.iter().cloned());
    TABLE.write(&path(dir), &all)
}

/// The declared schema of `perplexity.parquet` (columns in name order, as files have them).
pub const TABLE: Table<PplRow> = Table {
    name: "perplexity.parquet",
    columns: &[
        Column {
            name: "corpus",
            get: Get::Text(|r| Some(r.corpus.as_str())),
        },
        Column {
            name: "corpus_sha256",
            get: Get::Text(|r| Some(r.corpus_sha256.as_str())),
        },
        Column {
            name: "delta_ppl_pct",
            get: Get::Float(|r| r.delta_ppl_pct),
        },
        Column {
            name: "mean_kld",
            get: Get::Float(|r| Some(r.mean_kld)),
        },
        Column {
            name: "model",
            get: Get::Text(|r| Some(r.model.as_str())),
        },
        Column {
            name: "nll",
            get: Get::Float(|r| Some(r.nll)),
        },
        Column {
            name: "perplexity",
            get: Get::Float(|r| Some(r.perplexity)),
        },
        Column {
            name: "precision",
            get: Get::Text(|r| Some(r.precision.as_str())),
        },
        Column {
            name: "scheme",
            get: Get::Text(|r| Some(r.scheme.as_str())),
        },
        Column {
            name: "seq_len",
            get: Get::Int(|r| Some(r.seq_len)),
        },
        Column {
            name: "sequences",
            get: Get::Int(|r| Some(r.sequences)),
        },
        Column {
            name: "tokens",
            get: Get::Int(|r| Some(r.tokens)),
        },
        Column {
            name: "top1_agreement",
            get: Get::Float(|r| Some(r.top1_agreement)),
        },
    ],
};
