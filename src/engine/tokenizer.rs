//! Tokenizers: a Hugging Face `tokenizer.json`, or one built from a GGUF file's
//! `tokenizer.ggml.*` metadata (byte-level BPE with the pre-tokenizer its `pre` names).
//! Special tokens in a rendered chat prompt are matched as tokens; nothing is prepended
//! unless the model asks for a BOS token and the template did not write one.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

/// Qwen2's pre-tokenizer pattern (also used by llama.cpp for `pre = qwen2`).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's pattern: as Qwen2's but digits in groups of up to three.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A tokenizer with the model's special tokens.
pub struct Tok {
    pub inner: Tokenizer,
    pub bos: Option<(u32, String)>,
    pub eos: Option<(u32, String)>,
    /// Tokens that end generation.
    pub stop_ids: Vec<u32>,
    pub add_bos: bool,
    /// Where it came from, for the manifest (`gguf:smollm`, `tokenizer.json`).
    pub origin: String,
}

impl Tok {
    /// Token ids of a rendered prompt (special tokens written as text become tokens).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Model(format!("tokenizer failed: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if let Some((bos, _)) = &self.bos
            && self.add_bos
            && ids.first() != Some(bos)
        {
            ids.insert(0, *bos);
        }
        Ok(ids)
    }

    /// Text of `ids`, special tokens kept.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Model(format!("tokenizer failed to decode: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn md<'a>(ct: &'a Content, key: &str) -> Option<&'a Value> {
    ct.metadata.get(key)
}

fn md_u32(ct: &Content, key: &str) -> Option<u32> {
    md(ct, key).and_then(|v| match v {
        Value::U8(x) => Some(*x as u32),
        Value::I8(x) => Some(*x as u32),
        Value::U16(x) => Some(*x as u32),
        Value::I16(x) => Some(*x as u32),
        Value::U32(x) => Some(*x),
        Value::I32(x) => Some(*x as u32),
        Value::U64(x) => Some(*x as u32),
        Value::I64(x) => Some(*x as u32),
        _ => None,
    })
}

fn md_strings(ct: &Content, key: &str, file: &str) -> Result<Vec<String>> {
    let missing = || {
        Error::Model(format!(
            "{file}: GGUF metadata `{key}` is missing or not a string array"
        ))
    };
    let arr = md(ct, key)
        .and_then(|v| v.to_vec().ok())
        .ok_or_else(missing)?;
    arr.iter()
        .map(|v| v.to_string().cloned().map_err(|_| missing()))
        .collect()
}

fn pre_tokenizer(pre: &str, file: &str) -> Result<(PreTokenizerWrapper, bool)> {
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| Error::Model(format!("pre-tokenizer pattern: {e}")))?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    Ok(match pre {
        "smollm" => (
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            false,
        ),
        "qwen2" => (split(QWEN2_PATTERN)?, true),
        "llama3" | "llama-bpe" | "smaug-bpe" => (split(LLAMA3_PATTERN)?, false),
        "gpt2" | "default" => (ByteLevel::new(false, true, true).into(), false),
        other => {
            return Err(Error::Model(format!(
                "{file}: tokenizer.ggml.pre `{other}` is not supported (supported: smollm, qwen2, llama3, llama-bpe, smaug-bpe, gpt2)"
            )));
        }
    })
}

/// Build the tokenizer a GGUF file describes.
pub fn from_gguf(ct: &Content, file: &str) -> Result<Tok> {
    let model = md(ct, "tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if model != "gpt2" {
        return Err(Error::Model(format!(
            "{file}: tokenizer.ggml.model `{model}` is not supported (byte-level BPE `gpt2` is)"
        )));
    }
    let tokens = md_strings(ct, "tokenizer.ggml.tokens", file)?;
    let merges = md_strings(ct, "tokenizer.ggml.merges", file)?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| Error::Model(format!("{file}: malformed merge `{m}`")))
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::Model(format!("{file}: cannot build the BPE tokenizer: {e}")))?;
    let mut tk = Tokenizer::new(bpe);
    let pre = md(ct, "tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "gpt2".into());
    let (pt, nfc) = pre_tokenizer(&pre, file)?;
    tk.with_pre_tokenizer(Some(pt));
    if nfc {
        tk.with_normalizer(Some(NFC))
            .map_err(|e| Error::Model(format!("{file}: tokenizer normalizer: {e}")))?;
    }
    tk.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    // Control (3) and user-defined (4) tokens are matched whole in the prompt text.
    let types = md(ct, "tokenizer.ggml.token_type").and_then(|v| v.to_vec().ok());
    let specials: Vec<AddedToken> = match types {
        Some(types) => types
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                matches!(
                    t.to_i32()
                        .ok()
                        .or_else(|| t.to_u32().ok().map(|x| x as i32)),
                    Some(3) | Some(4)
                )
            })
            .filter_map(|(i, _)| tokens.get(i))
            .map(|t| AddedToken::from(t.clone(), true))
            .collect(),
        None => Vec::new(),
    };
    tk.add_special_tokens(specials)
        .map_err(|e| Error::Model(format!("{file}: special tokens: {e}")))?;
    let named =
        |key: &str| md_u32(ct, key).and_then(|id| tokens.get(id as usize).map(|t| (id, t.clone())));
    let bos = named("tokenizer.ggml.bos_token_id");
    let eos = named("tokenizer.ggml.eos_token_id");
    let add_bos = md(ct, "tokenizer.ggml.add_bos_token")
        .and_then(|v| v.to_bool().ok())
        .unwrap_or(false);
    let stop_ids = stop_ids(&tokens, eos.as_ref().map(|e| e.0));
    Ok(Tok {
        inner: tk,
        bos,
        eos,
        stop_ids,
        add_bos,
        origin: format!("gguf:{pre}"),
    })
}

/// EOS plus the usual end-of-turn tokens present in the vocabulary.
fn stop_ids(tokens: &[String], eos: Option<u32>) -> Vec<u32> {
    let mut ids: Vec<u32> = eos.into_iter().collect();
    for (i, t) in tokens.iter().enumerate() {
        if matches!(
            t.as_str(),
            "<|im_end|>" | "<|endoftext|>" | "<|end|>" | "<|eot_id|>" | "</s>"
        ) && !ids.contains(&(i as u32))
        {
            ids.push(i as u32);
        }
    }
    ids
}

/// Load `tokenizer.json` with the special tokens named in `tokenizer_config.json`.
pub fn from_hf_files(tokenizer_json: &std::path::Path, config: &serde_json::Value) -> Result<Tok> {
    let inner = Tokenizer::from_file(tokenizer_json).map_err(|e| {
        Error::Model(format!(
            "{}: cannot load tokenizer: {e}",
            tokenizer_json.display()
        ))
    })?;
    let token_text = |key: &str| -> Option<String> {
        match config.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("content")?.as_str().map(String::from),
            _ => None,
        }
    };
    let named = |key: &str| token_text(key).and_then(|t| inner.token_to_id(&t).map(|id| (id, t)));
    let bos = named("bos_token");
    let eos = named("eos_token");
    let add_bos = config
        .get("add_bos_token")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let vocab: Vec<String> = {
        let mut v: Vec<(String, u32)> = inner.get_vocab(true).into_iter().collect();
        v.sort_by_key(|(_, id)| *id);
        let n = v.last().map(|(_, id)| *id as usize + 1).unwrap_or(0);
        let mut out = vec![String::new(); n];
        for (t, id) in v {
            out[id as usize] = t;
        }
        out
    };
    let stop_ids = stop_ids(&vocab, eos.as_ref().map(|e| e.0));
    Ok(Tok {
        inner,
        bos,
        eos,
        stop_ids,
        add_bos,
        origin: "tokenizer.json".into(),
    })
}
