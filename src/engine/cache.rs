//! The key-value cache: keys and values of every layer for the tokens seen so far, an
//! immutable value (a forward returns a new cache, so one prompt's cache can be extended by
//! several seeds).
//!
//! A batch's cache is stored as layers of columns, not copied per row: the part's common
//! prefix once, the context an item's two polarities share once per item, each prompt's own
//! tokens once per prompt, each decoding step's token once per row. A cache built on another
//! ([`KvCache::on`], [`KvCache::select`]) keeps that one as its base, with the base row each
//! of its rows continues; the full keys and values of a row are put together one layer at a
//! time when a forward needs them ([`KvCache::columns`]), so no layer's batch-wide copy
//! outlives the layer.

use super::fused;
use crate::error::Result;
use candle_core::Tensor;
use std::sync::Arc;

/// Keys and values of every layer for the tokens seen so far. Cloning is cheap.
///
/// A batched cache has `len` columns per row. When its rows hold different numbers of real
/// tokens (rows of different lengths were run together), `ragged` says per row which columns
/// are real and the position of the row's next token, so each row can be extended on its
/// own ([`super::Transformer::forward_batch`] after [`KvCache::select`]).
#[derive(Clone, Default)]
pub struct KvCache {
    /// This cache's own columns, after the base's: `[rows, kv_heads, cols, head_dim]` per
    /// layer (one row: shared by every row); empty when it has none.
    own: Vec<(Tensor, Tensor)>,
    base: Option<Base>,
    pub(super) len: usize,
    pub(super) ragged: Option<Ragged>,
}

/// The cache a cache's columns follow, and which of its rows each row continues (`None`:
/// the same row, or its only row).
#[derive(Clone)]
struct Base {
    cache: Arc<KvCache>,
    rows: Option<Arc<Vec<u32>>>,
}

/// Per row of a batched cache: which columns hold real tokens, and the next position.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Ragged {
    pub(super) real: Vec<Vec<bool>>,
    pub(super) next: Vec<usize>,
}

impl KvCache {
    /// Tokens covered.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A cache of `len` columns held whole, one `(keys, values)` per layer.
    pub(super) fn whole(layers: Vec<(Tensor, Tensor)>, len: usize, ragged: Option<Ragged>) -> Self {
        KvCache {
            own: layers,
            base: None,
            len,
            ragged,
        }
    }

    /// `base` followed by `layers`, the keys and values of `len` more columns for each of
    /// `base`'s rows (or for any number of rows after a base of one row shared by all).
    pub(super) fn on(
        base: &KvCache,
        layers: Vec<(Tensor, Tensor)>,
        len: usize,
        ragged: Option<Ragged>,
    ) -> Self {
        if base.is_empty() {
            return KvCache::whole(layers, len, ragged);
        }
        KvCache {
            own: layers,
            base: Some(Base {
                cache: Arc::new(base.clone()),
                rows: None,
            }),
            len: base.len + len,
            ragged,
        }
    }

    /// The rows `idx` of a batched cache (a row may be taken several times), each keeping
    /// its real columns; nothing is copied. A cache of one row shared by all (a common
    /// prefix) stays shared.
    pub fn select(&self, idx: &[usize]) -> Result<KvCache> {
        let rows = self.rows()?;
        if self.is_empty() || (rows == 1 && self.ragged.is_none()) {
            return Ok(self.clone());
        }
        if let Some(&i) = idx.iter().find(|&&i| i >= rows) {
            return Err(crate::Error::Model(format!(
                "row {i} selected from a cache of {rows} rows"
            )));
        }
        let ragged = self.ragged.as_ref().map(|r| Ragged {
            real: idx.iter().map(|&i| r.real[i].clone()).collect(),
            next: idx.iter().map(|&i| r.next[i]).collect(),
        });
        Ok(KvCache {
            own: Vec::new(),
            base: Some(Base {
                cache: Arc::new(self.clone()),
                rows: Some(Arc::new(idx.iter().map(|&i| i as u32).collect())),
            }),
            len: self.len,
            ragged,
        })
    }

    /// The cache of the first `n` tokens.
    pub fn truncate(&self, n: usize) -> Result<KvCache> {
        if self.ragged.is_some() {
            return Err(crate::Error::Model(
                "a cache of rows of different lengths cannot be truncated".into(),
            ));
        }
        if n >= self.len {
            return Ok(self.clone());
        }
        if n == 0 {
            return Ok(KvCache::default());
        }
        let columns = self.columns()?;
        let layers = (0..columns.layers())
            .map(|li| {
                let (k, v) = columns.layer(li, None)?;
                Ok((k.narrow(2, 0, n)?, v.narrow(2, 0, n)?))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache::whole(layers, n, None))
    }

    /// The number of rows (1: one row shared by all).
    fn rows(&self) -> Result<usize> {
        let own = match self.own.first() {
            Some((k, _)) => k.dim(0)?,
            None => 0,
        };
        let base = match &self.base {
            Some(Base { rows: Some(r), .. }) => r.len(),
            Some(Base { cache, rows: None }) => cache.rows()?,
            None => 0,
        };
        Ok(own.max(base))
    }

    /// The cache's parts in column order with the rows each is read at, resolved once
    /// so that putting a layer together ([`Columns::layer`]) only queues copies.
    pub(super) fn columns(&self) -> Result<Columns<'_>> {
        let mut parts = Vec::new();
        self.collect(None, &mut parts)?;
        let parts = parts
            .into_iter()
            .map(|(layers, rows)| {
                let rows = match rows {
                    Some(r) => {
                        let dev = layers.first().map(|(k, _)| k.device().clone());
                        let dev =
                            dev.ok_or_else(|| crate::Error::Model("empty cache part".into()))?;
                        Some(Tensor::from_vec(r.clone(), r.len(), &dev)?)
                    }
                    None => None,
                };
                Ok(Part { layers, rows })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Columns { parts })
    }

    /// This cache's parts, base first, each with the rows of it that rows `idx` of this
    /// cache read (`None`: all, or its one row).
    fn collect<'a>(&'a self, idx: Option<Vec<u32>>, out: &mut Vec<Stored<'a>>) -> Result<()> {
        if let Some(base) = &self.base {
            let composed = match (&base.rows, &idx) {
                (None, i) => i.clone(),
                (Some(m), None) => Some(m.to_vec()),
                // A base of one row serves every row.
                (Some(m), Some(i)) if m.len() == 1 => Some(vec![m[0]; i.len()]),
                (Some(m), Some(i)) => Some(
                    i.iter()
                        .map(|&r| {
                            m.get(r as usize).copied().ok_or_else(|| {
                                crate::Error::Model(format!(
                                    "cache row {r} read from a base of {} rows",
                                    m.len()
                                ))
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                ),
            };
            base.cache.collect(composed, out)?;
        }
        if let Some((k, _)) = self.own.first() {
            let rows = if k.dim(0)? > 1 { idx } else { None };
            out.push((&self.own, rows));
        }
        Ok(())
    }
}

/// A part of a cache as stored, with the rows of it read (`None`: all, or its one row).
type Stored<'a> = (&'a [(Tensor, Tensor)], Option<Vec<u32>>);

/// A cache resolved into its stored parts in column order ([`KvCache::columns`]).
pub(super) struct Columns<'a> {
    parts: Vec<Part<'a>>,
}

struct Part<'a> {
    layers: &'a [(Tensor, Tensor)],
    /// The rows read, on the device; `None`: all, or its one row for every row.
    rows: Option<Tensor>,
}

impl Columns<'_> {
    pub(super) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The number of layers held.
    fn layers(&self) -> usize {
        self.parts.first().map_or(0, |p| p.layers.len())
    }

    /// Layer `li`'s keys and values of every row over all the cache's columns, followed by
    /// `new` (the keys and values of a forward's new tokens, `[b, kv_heads, len, d]`):
    /// `[b, kv_heads, columns + len, d]`, one copy (each part copied once where the kernels
    /// join columns; else selected or broadcast, then concatenated). Without `new`, the
    /// cache's rows (one where a single row is shared by all).
    pub(super) fn layer(
        &self,
        li: usize,
        new: Option<(&Tensor, &Tensor)>,
    ) -> Result<(Tensor, Tensor)> {
        let (ks, vs, rows) = self.sources(li, new)?;
        if ks.len() > 1
            && let (Some(k), Some(v)) = (
                fused::join_columns(&ks, rows)?,
                fused::join_columns(&vs, rows)?,
            )
        {
            return Ok((k, v));
        }
        let join = |parts: Vec<Source>| -> Result<Tensor> {
            let mut ts = parts
                .into_iter()
                .map(|(t, map)| match map {
                    Some(ids) => Ok(t.index_select(ids, 0)?),
                    None => Ok(t.clone()),
                })
                .collect::<Result<Vec<_>>>()?;
            match ts.len() {
                0 => Err(crate::Error::Model(format!("no cached layer {li}"))),
                1 => Ok(ts.remove(0)),
                _ => {
                    let ts = ts
                        .iter()
                        .map(|t| widen(t, rows))
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Tensor::cat(&ts, 2)?)
                }
            }
        };
        Ok((join(ks)?, join(vs)?))
    }

    /// Layer `li`'s parts in column order, keys and values, each with the rows it is read
    /// at (`None`: row for row, or its one row for every row), and the rows of the result.
    fn sources<'a>(
        &'a self,
        li: usize,
        new: Option<(&'a Tensor, &'a Tensor)>,
    ) -> Result<(Vec<Source<'a>>, Vec<Source<'a>>, usize)> {
        let mut ks = Vec::with_capacity(self.parts.len() + 1);
        let mut vs = Vec::with_capacity(self.parts.len() + 1);
        let mut rows = 0;
        for p in &self.parts {
            let (k, v) = p
                .layers
                .get(li)
                .ok_or_else(|| crate::Error::Model(format!("no cached layer {li}")))?;
            rows = rows.max(match &p.rows {
                Some(ids) => ids.dim(0)?,
                None => k.dim(0)?,
            });
            ks.push((k, p.rows.as_ref()));
            vs.push((v, p.rows.as_ref()));
        }
        if let Some((k, v)) = new {
            rows = rows.max(k.dim(0)?);
            ks.push((k, None));
            vs.push((v, None));
        }
        Ok((ks, vs, rows))
    }
}

/// A stored part of a cache layer and the rows it is read at (`None`: row for row, or its one
/// row for every row).
type Source<'a> = (&'a Tensor, Option<&'a Tensor>);

/// `t` with `rows` rows: itself, or its one row copied to each.
fn widen(t: &Tensor, rows: usize) -> Result<Tensor> {
    let (b, heads, cols, d) = t.dims4()?;
    Ok(if b == rows {
        t.clone()
    } else {
        t.broadcast_as((rows, heads, cols, d))?.contiguous()?
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// A cache of one layer whose entries name their row and column: `row * 100 + col`.
    fn numbered(rows: usize, cols: std::ops::Range<usize>) -> Result<Vec<(Tensor, Tensor)>> {
        let vals: Vec<f32> = (0..rows)
            .flat_map(|r| cols.clone().map(move |c| (r * 100 + c) as f32))
            .collect();
        let t = Tensor::from_vec(vals, (rows, 1, cols.len(), 1), &Device::Cpu)?;
        Ok(vec![(t.clone(), t)])
    }

    fn entries(c: &KvCache) -> Result<Vec<Vec<f32>>> {
        let (k, v) = c.columns()?.layer(0, None)?;
        let flat = |t: Tensor| t.squeeze(3)?.squeeze(1)?.to_vec2::<f32>();
        let keys = flat(k)?;
        assert_eq!(keys, flat(v)?);
        Ok(keys)
    }

    /// Keys stored for layer 0 (rows × columns) in the parts the cache reads.
    fn stored(c: &KvCache) -> Result<usize> {
        let mut n = 0;
        for p in &c.columns()?.parts {
            let (k, _) = &p.layers[0];
            n += k.dim(0)? * k.dim(2)?;
        }
        Ok(n)
    }

    #[test]
    fn rows_selected_from_a_cache_on_a_shared_prefix_read_as_if_copied() -> Result<()> {
        // A prefix of two columns shared by all, three contexts of two columns each.
        let prefix = KvCache::whole(numbered(1, 0..2)?, 2, None);
        let contexts = KvCache::on(&prefix, numbered(3, 2..4)?, 2, None);
        assert_eq!(contexts.len(), 4);
        assert_eq!(
            entries(&contexts)?,
            [[0., 1., 2., 3.], [0., 1., 102., 103.], [0., 1., 202., 203.]]
        );
        // Four prompts after contexts 2, 0, 0 and 1, one column each.
        let picked = contexts.select(&[2, 0, 0, 1])?;
        let prompts = KvCache::on(&picked, numbered(4, 4..5)?, 1, None);
        assert_eq!(
            entries(&prompts)?,
            [
                [0., 1., 202., 203., 4.],
                [0., 1., 2., 3., 104.],
                [0., 1., 2., 3., 204.],
                [0., 1., 102., 103., 304.]
            ]
        );
        // Stored once each: the prefix, the contexts, the prompts' own column (a copy per
        // row would be 4 × 5).
        assert_eq!(stored(&prompts)?, 2 + 3 * 2 + 4);
        // Two decoding rows after prompts 3 and 1, then the first 3 columns of a row.
        let steps = KvCache::on(&prompts.select(&[3, 1])?, numbered(2, 5..6)?, 1, None);
        assert_eq!(
            entries(&steps)?,
            [[0., 1., 102., 103., 304., 5.], [0., 1., 2., 3., 104., 105.]]
        );
        assert_eq!(entries(&steps.select(&[1])?.truncate(3)?)?, [[0., 1., 2.]]);
        Ok(())
    }

    #[test]
    fn a_batch_after_one_selected_row_reads_that_row_in_every_row() -> Result<()> {
        // A batch of three run after row 1 of a two-row cache, then two of its rows taken.
        let two = KvCache::whole(numbered(2, 0..2)?, 2, None);
        let batch = KvCache::on(&two.select(&[1])?, numbered(3, 2..3)?, 1, None);
        assert_eq!(
            entries(&batch)?,
            [[100., 101., 2.], [100., 101., 102.], [100., 101., 202.]]
        );
        assert_eq!(
            entries(&batch.select(&[0, 2])?)?,
            [[100., 101., 2.], [100., 101., 202.]]
        );
        // One more column for one row after three rows: still three rows.
        let three = KvCache::whole(numbered(3, 0..1)?, 1, None);
        let one_more = KvCache::on(&three, numbered(1, 1..2)?, 1, None);
        assert_eq!(entries(&one_more.select(&[2])?)?, [[200., 1.]]);
        // A row that is not there is an error, not a panic.
        assert!(batch.select(&[3]).is_err());
        Ok(())
    }

    #[test]
    fn a_shared_row_stays_shared_when_selected() -> Result<()> {
        let prefix = KvCache::whole(numbered(1, 0..3)?, 3, None);
        let picked = prefix.select(&[0, 0, 0])?;
        assert_eq!(entries(&picked)?, [[0., 1., 2.]]);
        assert_eq!(entries(&prefix.truncate(2)?)?, [[0., 1.]]);
        Ok(())
    }
}
