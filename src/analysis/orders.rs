//! The option-order check (`--option-orders`): the study's rule applied within each order
//! in which the options were shown, the items that became biased under every order, and the
//! share of answers at each letter position.

use crate::rules::{self, SeedTally};
use crate::store::StoredRecord;
use crate::vocab::{Precision, SeedSet};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One row of `option_orders`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OrderRow {
    pub model: String,
    pub scheme: String,
    pub precision: String,
    /// An order such as `120` (letter A shows `ans1`, B `ans2`, C `ans0`), or `every`: items
    /// unbiased at BF16 under every order that became biased under every order.
    pub option_order: String,
    pub unbiased_at_bf16: u64,
    pub became_biased: u64,
    pub rate: Option<f64>,
    /// Share of valid answers given with the letters A, B and C (`null` for `every`).
    pub letter_shares: Option<[f64; 3]>,
}

type Key = (String, String); // (model, scheme)
type ItemKey = (String, i64);

/// Per order, per item: the seeds' answers.
type ByOrder = BTreeMap<String, BTreeMap<ItemKey, SeedTally>>;
/// Per precision, per order, per item: the seeds' answers.
type ByPrecision = BTreeMap<String, ByOrder>;
/// (model, scheme, precision, order) → answers per letter position.
type Letters = BTreeMap<(Key, String, String), [u64; 3]>;

/// The rows, when a (model, scheme) has answers in more than one order; empty otherwise.
pub fn compute(records: &[StoredRecord], biased_index: &BTreeMap<ItemKey, u8>) -> Vec<OrderRow> {
    let (acc, letters) = tally(records, biased_index);
    let mut rows = Vec::new();
    for ((model, scheme), by_precision) in &acc {
        let orders: BTreeSet<&String> = by_precision.values().flat_map(|o| o.keys()).collect();
        if orders.len() < 2 {
            continue;
        }
        let Some(base) = by_precision.get(Precision::Bf16.as_str()) else {
            continue;
        };
        for (precision, by_order) in by_precision {
            let group = Group {
                key: (model.clone(), scheme.clone()),
                precision,
                base,
                by_order,
                letters: &letters,
            };
            rows.extend(group.rows(&orders));
        }
    }
    rows
}

/// Count the study seeds' answers per (model, scheme), precision, order and item, and the
/// valid answers per letter position.
fn tally(
    records: &[StoredRecord],
    biased_index: &BTreeMap<ItemKey, u8>,
) -> (BTreeMap<Key, ByPrecision>, Letters) {
    let mut acc: BTreeMap<Key, ByPrecision> = BTreeMap::new();
    let mut letters = Letters::new();
    for r in records.iter().filter(|r| r.rec.seed_set == SeedSet::Study) {
        let key = (r.model.clone(), r.scheme.clone());
        let item = (r.rec.category.clone(), r.rec.example_id);
        let Some(&bi) = biased_index.get(&item) else {
            continue;
        };
        let a = acc
            .entry(key.clone())
            .or_default()
            .entry(r.precision.clone())
            .or_default()
            .entry(r.rec.option_order.clone())
            .or_default()
            .entry(item)
            .or_default();
        if let Some(ans) = r.rec.answer {
            a.add(true, ans == bi);
            let position = r.rec.option_order.bytes().position(|b| b == b'0' + ans);
            if let Some(j) = position {
                letters
                    .entry((key, r.precision.clone(), r.rec.option_order.clone()))
                    .or_default()[j] += 1;
            }
        }
    }
    (acc, letters)
}

/// One (model, scheme) at one precision, against its BF16 answers.
struct Group<'a> {
    key: Key,
    precision: &'a String,
    base: &'a ByOrder,
    by_order: &'a ByOrder,
    letters: &'a Letters,
}

impl Group<'_> {
    /// One row per order, then the `every` row.
    fn rows(&self, orders: &BTreeSet<&String>) -> Vec<OrderRow> {
        let mut rows = Vec::new();
        let mut every: Option<(BTreeSet<ItemKey>, BTreeSet<ItemKey>)> = None;
        for order in orders {
            let (u, became) = self.transitions(order);
            rows.push(self.row(order, u.len(), became.len(), self.shares(order)));
            every = Some(match every {
                None => (u, became),
                Some((eu, eb)) => (
                    eu.intersection(&u).cloned().collect(),
                    eb.intersection(&became).cloned().collect(),
                ),
            });
        }
        let (u, b) = every.unwrap_or_default();
        // Became biased under every order, among items unbiased under every order.
        let b = b.intersection(&u).count();
        rows.push(self.row("every", u.len(), b, None));
        rows
    }

    /// The items unbiased at BF16 in `order`, and those of them that became biased.
    fn transitions(&self, order: &str) -> (BTreeSet<ItemKey>, BTreeSet<ItemKey>) {
        let base = self.base.get(order);
        let items = self.by_order.get(order);
        let unbiased: BTreeSet<ItemKey> = base
            .into_iter()
            .flatten()
            .filter(|(_, a)| a.unbiased())
            .map(|(k, _)| k.clone())
            .collect();
        let became = unbiased
            .iter()
            .filter(|k| {
                let (b, p) = (base.and_then(|i| i.get(*k)), items.and_then(|i| i.get(*k)));
                b.zip(p).is_some_and(|(b, p)| rules::became_biased(*b, *p))
            })
            .cloned()
            .collect();
        (unbiased, became)
    }

    /// Shares of the valid answers given with the letters A, B and C in `order`.
    fn shares(&self, order: &str) -> Option<[f64; 3]> {
        let counts = self
            .letters
            .get(&(self.key.clone(), self.precision.clone(), order.to_string()))
            .copied()
            .unwrap_or_default();
        let total: u64 = counts.iter().sum();
        (total > 0).then(|| counts.map(|c| c as f64 / total as f64))
    }

    fn row(
        &self,
        order: &str,
        unbiased: usize,
        became: usize,
        shares: Option<[f64; 3]>,
    ) -> OrderRow {
        OrderRow {
            model: self.key.0.clone(),
            scheme: self.key.1.clone(),
            precision: self.precision.clone(),
            option_order: order.to_string(),
            unbiased_at_bf16: unbiased as u64,
            became_biased: became as u64,
            rate: ratio(became, unbiased),
            letter_shares: shares,
        }
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}
