//! One llama-family decoder (llama, mistral, qwen2, phi3), driven by a [`ModelConfig`]:
//! q/k/v biases, fused projections (split when loaded) and rotary scaling are data, not code. Weights are given per precision as [`QMatMul`]s, so the same forward
//! runs BF16, dequantized and kernel-quantized layers. A forward returns a new
//! [`KvCache`] (see [`super::cache`]).

use super::cache::{self, KvCache, Ragged};
pub use super::config::{ModelConfig, RopeStyle};
use super::fused;
pub use super::matrix::Matrix;
use super::stack::Stack;
use crate::error::Result;
use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};

/// One transformer block.
pub struct Layer {
    /// The query, key and value projections.
    pub qkv: Stack,
    pub wo: Matrix,
    pub bq: Option<Tensor>,
    pub bk: Option<Tensor>,
    pub bv: Option<Tensor>,
    /// The MLP's gate and up projections.
    pub gate_up: Stack,
    pub w_down: Matrix,
    pub attn_norm: Tensor,
    pub ffn_norm: Tensor,
}

/// A model ready to run at one precision.
pub struct Transformer {
    pub cfg: ModelConfig,
    /// Token embeddings `[vocab, hidden]`.
    pub embed: Matrix,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// The output layer; `None` when it is the embedding matrix (tied).
    pub lm_head: Option<Matrix>,
    /// The dtype of weights and activations: F32 on the CPU, BF16 on a GPU.
    pub dtype: DType,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// Token positions run through the blocks so far, padding included (for benchmarks).
    positions_run: std::sync::atomic::AtomicU64,
}

/// cos and sin tables `[max_positions, head_dim/2]`, with `rope_mscale` folded in (scaling
/// both q and k before rotation is scaling cos and sin).
fn rope_tables(cfg: &ModelConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let freqs = if cfg.rope_freqs.is_empty() {
        cfg.base_rope_freqs()
    } else {
        cfg.rope_freqs.clone()
    };
    if freqs.len() != half {
        return Err(crate::Error::Model(format!(
            "rotary scaling has {} factors for a head of {} dimensions (expected {half})",
            freqs.len(),
            cfg.head_dim
        )));
    }
    let inv: Vec<f32> = freqs.iter().map(|f| (1.0 / f) as f32).collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let pos = Tensor::arange(0u32, cfg.max_positions as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((cfg.max_positions, 1))?;
    let angles = pos.matmul(&inv)?;
    let m = cfg.rope_mscale;
    Ok(((angles.cos()? * m)?, (angles.sin()? * m)?))
}

impl Transformer {
    pub fn new(
        cfg: ModelConfig,
        embed: Matrix,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Option<Matrix>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let (cos, sin) = rope_tables(&cfg, device)?;
        Ok(Self {
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            dtype,
            cos: cos.to_dtype(dtype)?,
            sin: sin.to_dtype(dtype)?,
            device: device.clone(),
            positions_run: Default::default(),
        })
    }

    /// Token positions run through the blocks since the model was built: every row of
    /// every forward at its padded width, so against the tokens computed it measures
    /// padding.
    pub fn positions_run(&self) -> u64 {
        self.positions_run
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Bytes of weights the model holds (a tied output layer counted once).
    pub fn weight_bytes(&self) -> usize {
        let tensor = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let opt = |t: &Option<Tensor>| t.as_ref().map_or(0, tensor);
        let head = match (&self.lm_head, &self.embed) {
            (Some(Matrix::Packed(a)), Matrix::Packed(b)) if a.words.id() == b.words.id() => 0,
            (Some(Matrix::Mm(QMatMul::Tensor(a))), Matrix::Mm(QMatMul::Tensor(b)))
                if a.id() == b.id() =>
            {
                0
            }
            (Some(h), _) => h.bytes(),
            (None, _) => 0,
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.bytes()
                    + l.gate_up.bytes()
                    + l.wo.bytes()
                    + l.w_down.bytes()
                    + opt(&l.bq)
                    + opt(&l.bk)
                    + opt(&l.bv)
                    + tensor(&l.attn_norm)
                    + tensor(&l.ffn_norm)
            })
            .sum();
        self.embed.bytes() + head + layers + tensor(&self.norm)
    }

    /// Run `tokens` after the context in `cache`; returns the next-token logits (F32,
    /// `[vocab]`) at the last position and the extended cache.
    pub fn forward(&self, tokens: &[u32], cache: &KvCache) -> Result<(Tensor, KvCache)> {
        let (x, cache) = self.hidden(&[tokens], cache)?;
        let last = x.narrow(0, tokens.len() - 1, 1)?.unsqueeze(0)?;
        let logits = self.head(&last)?.squeeze(0)?.squeeze(0)?;
        Ok((logits, cache))
    }

    /// Run several prompts after one shared context in `cache` (batch 1, or one row per
    /// prompt), or each row after its own row of a ragged cache. The rows are right-padded
    /// to the longest; the mask keeps padding out of every real position. Returns the F32 next-token logits `[rows, vocab]`
    /// at each row's last token and the batched cache (row `b` covers
    /// `cache.len() + rows[b].len()` real tokens; see [`KvCache::select`]).
    pub fn forward_batch(&self, rows: &[&[u32]], cache: &KvCache) -> Result<(Tensor, KvCache)> {
        if rows.len() == 1 {
            let (logits, cache) = self.forward(rows[0], cache)?;
            return Ok((logits.unsqueeze(0)?, cache));
        }
        let (x, cache) = self.hidden(rows, cache)?;
        let last = Tensor::from_vec(self.last_tokens(rows), rows.len(), &self.device)?;
        let x = x.index_select(&last, 0)?.unsqueeze(1)?;
        let logits = self.head(&x)?.squeeze(1)?;
        Ok((logits, cache))
    }

    /// The cache after running `rows` after `cache` (as [`Transformer::forward_batch`]),
    /// without the output layer: for context that later tokens extend.
    pub fn extend(&self, rows: &[&[u32]], cache: &KvCache) -> Result<KvCache> {
        Ok(self.hidden(rows, cache)?.1)
    }

    /// The next-token logits (F32, `[len, vocab]`) at every position of `tokens`, from an
    /// empty context.
    pub fn forward_all(&self, tokens: &[u32]) -> Result<Tensor> {
        let (x, _) = self.hidden(&[tokens], &KvCache::default())?;
        Ok(self.head(&x.unsqueeze(0)?)?.squeeze(0)?)
    }

    /// Whether this model's forwards pack their rows (no padding through the blocks).
    fn packs(&self) -> bool {
        fused::packs(&self.device, self.dtype)
    }

    /// The index of each row's last token in [`Transformer::hidden`]'s output.
    fn last_tokens(&self, rows: &[&[u32]]) -> Vec<u32> {
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut start = 0;
        rows.iter()
            .enumerate()
            .map(|(b, r)| {
                let first = if self.packs() { start } else { b * width };
                start += r.len();
                (first + r.len() - 1) as u32
            })
            .collect()
    }

    /// F32 logits of the residual stream `x` `[b, len, hidden]`. In F32 models this is the
    /// plain norm and output layer; otherwise the final norm and the output layer run in F32
    /// (on CUDA as products of BF16 weights with F32 accumulation and results, the normed
    /// stream split into two BF16 parts; elsewhere weights turned into F32 a block of rows at
    /// a time), so the letter logits never tie from BF16 rounding.
    fn head(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        if self.dtype == DType::F32 {
            let x = candle_nn::ops::rms_norm(x, &self.norm, self.cfg.rms_norm_eps as f32)?;
            return Ok(w.forward(&x)?.to_dtype(DType::F32)?);
        }
        let (b, len, h) = x.dims3()?;
        let norm = self.norm.to_dtype(DType::F32)?;
        let x = x.to_dtype(DType::F32)?.reshape((b * len, h))?;
        let x = candle_nn::ops::rms_norm(&x, &norm, self.cfg.rms_norm_eps as f32)?;
        let logits = w.forward_f32(&x)?;
        let vocab = logits.dim(1)?;
        Ok(logits.reshape((b, len, vocab))?)
    }

    /// The residual stream after the last block, one row per token position, `[positions,
    /// hidden]`: each row's tokens one after another where the model packs its rows, else
    /// each row right-padded to the longest; and the extended cache.
    fn hidden(&self, rows: &[&[u32]], cache: &KvCache) -> Result<(Tensor, KvCache)> {
        let cfg = &self.cfg;
        let b = rows.len();
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        if len == 0 || rows.iter().any(|r| r.is_empty()) {
            return Err(crate::Error::Model("forward of no tokens".into()));
        }
        let layout = Layout::new(rows, cache)?;
        let last = layout.starts.iter().max().copied().unwrap_or(0) + len;
        if last > cfg.max_positions {
            return Err(crate::Error::Model(format!(
                "prompt of {last} tokens exceeds the model's {} positions",
                cfg.max_positions
            )));
        }
        let packs = self.packs();
        let pad = |r: &[u32]| if packs { 0 } else { len - r.len() };
        let ids: Vec<u32> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(0, pad(r))))
            .collect();
        let tokens = ids.len();
        self.positions_run
            .fetch_add(tokens as u64, std::sync::atomic::Ordering::Relaxed);
        let ids = Tensor::from_vec(ids, tokens, &self.device)?;
        let mut x = self.embed.rows(&ids, self.dtype)?;
        if !packs {
            x = x.reshape((b, len, cfg.hidden_size))?;
        }
        // Each row's first token, then each row's length: only where rows are packed.
        let table = match packs {
            true => {
                let mut table: Vec<u32> = rows
                    .iter()
                    .scan(0, |start, r| {
                        let first = *start;
                        *start += r.len();
                        Some(first as u32)
                    })
                    .collect();
                table.extend(rows.iter().map(|r| r.len() as u32));
                Some(Tensor::from_vec(table, 2 * b, &self.device)?)
            }
            false => None,
        };
        let packed = table.as_ref().map(|table| fused::Rows {
            table,
            b,
            len,
            tokens,
        });
        let mask = layout.mask(&self.device, self.dtype)?;
        let (cos, sin) = self.rope_tables_for(&layout)?;
        // One row keeps its cache whole (the CPU's prompt-by-prompt path narrows it for the
        // next prompt); a batch keeps only its new columns, on the cache it extends.
        let whole = b == 1;
        let mut new_layers = Vec::with_capacity(self.layers.len());
        let past = cache.columns()?;
        for (li, layer) in self.layers.iter().enumerate() {
            let io = (&past, li, whole);
            let (y, kv) = self.block(layer, x, io, mask.as_ref(), (&cos, &sin), packed)?;
            x = y;
            new_layers.push(kv);
        }
        if !packs {
            x = x.reshape((b * len, cfg.hidden_size))?;
        }
        let ragged = layout.extended();
        let cache = match whole {
            true => KvCache::whole(new_layers, cache.len() + len, ragged),
            false => KvCache::on(cache, new_layers, len, ragged),
        };
        Ok((x, cache))
    }

    /// cos and sin for the new tokens: `[len, half]` when every row starts at the same
    /// position, else `[rows, len, half]`.
    fn rope_tables_for(&self, layout: &Layout) -> Result<(Tensor, Tensor)> {
        let len = layout.len;
        match layout.uniform_start() {
            Some(pos) => Ok((self.cos.narrow(0, pos, len)?, self.sin.narrow(0, pos, len)?)),
            None => {
                let ids: Vec<u32> = layout
                    .starts
                    .iter()
                    .flat_map(|&s| (s..s + len).map(|p| p as u32))
                    .collect();
                let ids = Tensor::from_vec(ids, layout.starts.len() * len, &self.device)?;
                let half = self.cfg.head_dim / 2;
                let shape = (layout.starts.len(), len, half);
                Ok((
                    self.cos.index_select(&ids, 0)?.reshape(shape)?,
                    self.sin.index_select(&ids, 0)?.reshape(shape)?,
                ))
            }
        }
    }

    /// One transformer block (layer `li`) over `x` `[b, len, hidden]` after the cached keys
    /// and values `past`; returns the new residual stream and the layer's keys and values:
    /// all of them when `whole`, else the new tokens' only. The attention's temporaries are
    /// freed before the MLP runs.
    fn block(
        &self,
        layer: &Layer,
        x: Tensor,
        io: (&cache::Columns, usize, bool),
        mask: Option<&Tensor>,
        rope: (&Tensor, &Tensor),
        packed: Option<fused::Rows>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let (x, kv) = self.attention(layer, x, io, mask, rope, packed)?;
        let h = fused::rms_norm(&x, &layer.ffn_norm, self.cfg.rms_norm_eps as f32)?;
        let x = fused::add(&x, &mlp(layer, &h)?)?;
        Ok((x, kv))
    }

    /// The attention half of a block: the residual stream after it, and the layer's keys and
    /// values as [`Transformer::block`] returns them.
    fn attention(
        &self,
        layer: &Layer,
        x: Tensor,
        (past, li, whole): (&cache::Columns, usize, bool),
        mask: Option<&Tensor>,
        (cos, sin): (&Tensor, &Tensor),
        packed: Option<fused::Rows>,
    ) -> Result<(Tensor, (Tensor, Tensor))> {
        let cfg = &self.cfg;
        let eps = cfg.rms_norm_eps as f32;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let h = fused::rms_norm(&x, &layer.attn_norm, eps)?;
        let rope = Some((cos, sin, cfg.rope_style));
        let [yq, yk, yv] = three(layer.qkv.forward(&h)?)?;
        let q = fused::heads(&yq, layer.bq.as_ref(), rope, (nh, hd), packed)?;
        let k = fused::heads(&yk, layer.bk.as_ref(), rope, (nkv, hd), packed)?;
        let v = fused::heads(&yv, layer.bv.as_ref(), None, (nkv, hd), packed)?;
        drop((h, yq, yk, yv));
        let (new_k, new_v) = (k.clone(), v.clone());
        let (k, v) = match past.is_empty() {
            true => (k, v),
            false => past.layer(li, Some((&k, &v)))?,
        };
        let kv = match whole {
            true => (k.clone(), v.clone()),
            false => (new_k, new_v),
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let y = if self.device.is_cpu() {
            attend_repeated(&q, k, v, mask, nh / nkv, scale)?
        } else {
            attend_grouped(&q, &k, &v, mask, nh / nkv, scale)?
        };
        let y = fused::merge_heads(&y, packed)?;
        Ok((fused::add(&x, &layer.wo.forward(&y)?)?, kv))
    }
}

/// Token rows a packed forward runs through the MLP at a time: its gate, up and activation
/// (at Qwen2.5-7B's width 16,384 rows × 56,832 BF16 values, 1.9 GB) would otherwise grow
/// with the batch. Chunks cost throughput (3% of a 9,600-token forward in two chunks on an
/// H200), so only batches larger than a 7B model's default of 256 prompts are cut.
const MLP_ROWS: usize = 16_384;

/// The MLP's output for the normed stream `h`: `[b, len, hidden]`, or packed `[tokens,
/// hidden]`, whose rows go through in even chunks of at most [`MLP_ROWS`].
fn mlp(layer: &Layer, h: &Tensor) -> Result<Tensor> {
    let rows = h.dim(0)?;
    let chunks = match h.rank() {
        2 => rows.div_ceil(MLP_ROWS),
        _ => 1,
    };
    if chunks <= 1 {
        return mlp_rows(layer, h);
    }
    let per = rows.div_ceil(chunks);
    let outs = (0..rows)
        .step_by(per)
        .map(|start| mlp_rows(layer, &h.narrow(0, start, per.min(rows - start))?))
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&outs, 0)?)
}

/// The MLP over the rows of `h`. Dense gate and up matrices joined are one product; packed
/// ones are dequantized and multiplied one at a time, so only one of them is ever held
/// dequantized.
fn mlp_rows(layer: &Layer, h: &Tensor) -> Result<Tensor> {
    let act = match layer.gate_up.joined() {
        Some(w @ Matrix::Mm(_)) => fused::silu_mul_joined(&w.forward(h)?)?,
        _ => {
            let [gate, up] = two(layer.gate_up.forward_each(h)?)?;
            fused::silu_mul(&gate, &up)?
        }
    };
    layer.w_down.forward(&act)
}

fn three(v: Vec<Tensor>) -> Result<[Tensor; 3]> {
    let n = v.len();
    v.try_into()
        .map_err(|_| crate::Error::Model(format!("{n} projections where q, k and v are three")))
}

fn two(v: Vec<Tensor>) -> Result<[Tensor; 2]> {
    let n = v.len();
    v.try_into()
        .map_err(|_| crate::Error::Model(format!("{n} projections where gate and up are two")))
}

/// Where a forward's new tokens sit: `cols` cached columns, then `len` new ones per row
/// (rows right-padded); each row's first new token is at position `starts[b]`, and `real`
/// says which cached columns of each row hold real tokens (`None`: all of them).
struct Layout {
    cols: usize,
    len: usize,
    lens: Vec<usize>,
    starts: Vec<usize>,
    real: Option<Vec<Vec<bool>>>,
}

impl Layout {
    fn new(rows: &[&[u32]], cache: &KvCache) -> Result<Layout> {
        let b = rows.len();
        let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let len = lens.iter().copied().max().unwrap_or(0);
        let (starts, real) = match &cache.ragged {
            Some(r) if r.next.len() == b => (r.next.clone(), Some(r.real.clone())),
            Some(r) => {
                return Err(crate::Error::Model(format!(
                    "a cache of {} rows extended by {b} rows",
                    r.next.len()
                )));
            }
            None => (vec![cache.len; b], None),
        };
        Ok(Layout {
            cols: cache.len,
            len,
            lens,
            starts,
            real,
        })
    }

    /// The position every row starts at, when they all start at the same one.
    fn uniform_start(&self) -> Option<usize> {
        let first = *self.starts.first()?;
        (self.real.is_none() && self.starts.iter().all(|&s| s == first)).then_some(first)
    }

    /// The additive attention mask: `[1, 1, len, cols + len]` (causal after a shared
    /// context) or, for ragged rows, `[rows, 1, len, cols + len]` that also hides each row's
    /// padded cached columns. `None` for one new token after a shared context.
    fn mask(&self, device: &Device, dtype: DType) -> Result<Option<Tensor>> {
        let (cols, len) = (self.cols, self.len);
        let keys = cols + len;
        let Some(real) = &self.real else {
            if len == 1 {
                return Ok(None);
            }
            let m: Vec<f32> = (0..len)
                .flat_map(|i| {
                    (0..keys).map(move |j| if j > cols + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            return Ok(Some(
                Tensor::from_vec(m, (1, 1, len, keys), device)?.to_dtype(dtype)?,
            ));
        };
        Ok(Some(fused::ragged_mask(real, len, device, dtype)?))
    }

    /// The cache's row layout after the forward: `None` while every row is real throughout.
    fn extended(&self) -> Option<Ragged> {
        let even = self.lens.iter().all(|&l| l == self.len);
        if self.real.is_none() && even {
            return None;
        }
        let real = (0..self.lens.len())
            .map(|b| {
                let old = match &self.real {
                    Some(r) => r[b].clone(),
                    None => vec![true; self.cols],
                };
                old.into_iter()
                    .chain((0..self.len).map(|i| i < self.lens[b]))
                    .collect()
            })
            .collect();
        let next = self
            .starts
            .iter()
            .zip(&self.lens)
            .map(|(s, l)| s + l)
            .collect();
        Some(Ragged { real, next })
    }
}

/// Attention with each key/value head copied to the query heads it serves (the CPU path,
/// whose numerics the CPU records were made with). `q` `[b, heads, len, d]`, `k`/`v`
/// `[b, kv_heads, keys, d]`; returns `[b, heads, len, d]`.
fn attend_repeated(
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    mask: Option<&Tensor>,
    rep: usize,
    scale: f64,
) -> Result<Tensor> {
    let k = candle_transformers::utils::repeat_kv(k, rep)?.contiguous()?;
    let v = candle_transformers::utils::repeat_kv(v, rep)?.contiguous()?;
    let mut att = (q.matmul(&k.t()?)? * scale)?;
    if let Some(m) = mask {
        att = att.broadcast_add(m)?;
    }
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    Ok(att.matmul(&v)?)
}

/// Grouped-query attention that reads each key/value head in place: the `rep` query heads
/// of a group are stacked along the query axis (`[b, kv_heads, rep·len, d]`, a free view of
/// contiguous `q`), so one batched matmul per group replaces copying keys and values `rep`
/// times. Same result as [`attend_repeated`] up to the matmul's summation order.
fn attend_grouped(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    rep: usize,
    scale: f64,
) -> Result<Tensor> {
    let (b, nh, len, hd) = q.dims4()?;
    let nkv = nh / rep;
    let q = q.contiguous()?.reshape((b, nkv, rep * len, hd))?;
    let att = fused::masked_softmax(&q.matmul(&k.t()?)?, mask, scale, rep, len)?;
    Ok(att.matmul(v)?.reshape((b, nh, len, hd))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::packed::Packed;

    #[test]
    fn shapes_that_cannot_make_a_transformer_are_named() {
        let ok = ModelConfig {
            architecture: "llama".into(),
            hidden_size: 64,
            intermediate_size: 128,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 16,
            vocab_size: 10,
            rms_norm_eps: 1e-5,
            rope_theta: 1e4,
            rope_style: RopeStyle::Half,
            rope_freqs: Vec::new(),
            rope_mscale: 1.0,
            max_positions: 64,
            tie_embeddings: true,
        };
        assert_eq!(ok.inconsistency(), None);
        let with = |f: fn(&mut ModelConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            c.inconsistency().expect("inconsistent")
        };
        assert_eq!(with(|c| c.num_layers = 0), "the layer count is 0");
        assert_eq!(
            with(|c| c.num_kv_heads = 3),
            "4 attention heads do not split evenly over 3 key-value heads"
        );
        assert_eq!(with(|c| c.head_dim = 15), "the head dimension 15 is odd");
    }

    #[test]
    fn the_mlp_over_rows_in_chunks_equals_the_mlp_over_all_rows() -> Result<()> {
        use crate::engine::mlx::quantize;
        use half::bf16;
        let dev = Device::Cpu;
        let packed = |rows: usize, k: usize| -> Result<Matrix> {
            let vals: Vec<bf16> = (0..rows * 64)
                .map(|i| bf16::from_f32(((i * k % 29) as f32 - 14.0) / 70.0))
                .collect();
            Ok(Matrix::Packed(Packed::new(
                &quantize(&vals, rows, 64, 4, 64)?,
                &dev,
            )?))
        };
        let dense = |rows: usize| Tensor::randn(0f32, 0.2, (rows, 64), &dev).map(Matrix::dense);
        let ones = Tensor::ones(64, DType::F32, &dev)?;
        let layer = Layer {
            qkv: Stack::new(vec![dense(64)?, dense(64)?, dense(64)?])?,
            wo: dense(64)?,
            bq: None,
            bk: None,
            bv: None,
            // Gate and up as one packed product, as a GPU holds them.
            gate_up: Stack::Joined {
                w: packed(128, 5)?,
                widths: vec![64, 64],
            },
            w_down: packed(64, 11)?,
            attn_norm: ones.clone(),
            ffn_norm: ones,
        };
        let h = Tensor::randn(0f32, 1.0, (2 * MLP_ROWS + 5, 64), &dev)?;
        let chunked = mlp(&layer, &h)?;
        let whole = mlp_rows(&layer, &h)?;
        // The packed gate and up, multiplied one at a time, against their values as one
        // dense product.
        let dense = |m: &Matrix| match m {
            Matrix::Packed(p) => {
                Ok::<_, crate::Error>(Matrix::dense(p.dequantize()?.to_dtype(DType::F32)?))
            }
            Matrix::Mm(_) => Err(crate::Error::Model("not packed".into())),
        };
        let joined_dense = Layer {
            gate_up: Stack::Joined {
                w: dense(layer.gate_up.joined().expect("joined"))?,
                widths: vec![64, 64],
            },
            w_down: dense(&layer.w_down)?,
            ..layer
        };
        let reference = mlp_rows(&joined_dense, &h)?;
        let max_diff = |a: &Tensor, b: &Tensor| -> Result<f32> {
            assert_eq!(a.dims(), b.dims());
            Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
        };
        assert!(max_diff(&chunked, &whole)? < 1e-5);
        assert!(max_diff(&whole, &reference)? < 1e-5);
        assert!(whole.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()? > 1e-3);
        Ok(())
    }

    #[test]
    fn grouped_attention_equals_repeated_keys_and_values() -> Result<()> {
        let dev = Device::Cpu;
        let (b, nh, nkv, len, keys, hd) = (2, 6, 2, 3, 5, 4);
        let q = Tensor::randn(0f32, 1.0, (b, nh, len, hd), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, nkv, keys, hd), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, nkv, keys, hd), &dev)?;
        // Causal over the last `len` keys after two cached ones.
        let m: Vec<f32> = (0..len)
            .flat_map(|i| (0..keys).map(move |j| if j > 2 + i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(m, (1, 1, len, keys), &dev)?;
        let a = attend_repeated(&q, k.clone(), v.clone(), Some(&mask), nh / nkv, 0.5)?;
        let g = attend_grouped(&q, &k, &v, Some(&mask), nh / nkv, 0.5)?;
        let diff = (a - g)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }
}
