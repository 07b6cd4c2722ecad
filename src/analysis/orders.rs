//! The option-order check (`--option-orders`): the study's rule applied within each order
//! in which the options were shown, the items that became biased under every order, and the
//! share of answers at each letter position.

use crate::store::StoredRecord;
use crate::vocab::SeedSet;
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

/// Per precision, per order, per item: the answers' counts.
type ByPrecision = BTreeMap<String, BTreeMap<String, BTreeMap<ItemKey, Acc>>>;

#[derive(Default, Clone, Copy)]
struct Acc {
    valid: u32,
    biased: u32,
}

/// The rows, when a (model, scheme) has answers in more than one order; empty otherwise.
pub fn compute(records: &[StoredRecord], biased_index: &BTreeMap<ItemKey, u8>) -> Vec<OrderRow> {
    // (model, scheme) → precision → order → item → counts.
    let mut acc: BTreeMap<Key, ByPrecision> = BTreeMap::new();
    // (model, scheme, precision, order) → answers per letter position.
    let mut letters: BTreeMap<(Key, String, String), [u64; 3]> = BTreeMap::new();
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
            a.valid += 1;
            a.biased += u32::from(ans == bi);
            let position = r.rec.option_order.bytes().position(|b| b == b'0' + ans);
            if let Some(j) = position {
                letters
                    .entry((key, r.precision.clone(), r.rec.option_order.clone()))
                    .or_default()[j] += 1;
            }
        }
    }
    let mut rows = Vec::new();
    for ((model, scheme), by_precision) in &acc {
        let orders: BTreeSet<&String> = by_precision.values().flat_map(|o| o.keys()).collect();
        if orders.len() < 2 {
            continue;
        }
        let Some(base) = by_precision.get("bf16") else {
            continue;
        };
        let unbiased = |order: &str| -> BTreeSet<ItemKey> {
            base.get(order)
                .map(|items| {
                    items
                        .iter()
                        .filter(|(_, a)| a.valid > 0 && a.biased == 0)
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        for (precision, by_order) in by_precision {
            let mut every: Option<BTreeSet<ItemKey>> = None;
            let mut every_became: Option<BTreeSet<ItemKey>> = None;
            for order in &orders {
                let u = unbiased(order);
                let items = by_order.get(*order);
                let became: BTreeSet<ItemKey> = u
                    .iter()
                    .filter(|k| items.and_then(|i| i.get(*k)).is_some_and(|a| a.biased > 0))
                    .cloned()
                    .collect();
                let counts = letters
                    .get(&(
                        (model.clone(), scheme.clone()),
                        precision.clone(),
                        (*order).clone(),
                    ))
                    .copied()
                    .unwrap_or_default();
                let total: u64 = counts.iter().sum();
                rows.push(OrderRow {
                    model: model.clone(),
                    scheme: scheme.clone(),
                    precision: precision.clone(),
                    option_order: (*order).clone(),
                    unbiased_at_bf16: u.len() as u64,
                    became_biased: became.len() as u64,
                    rate: ratio(became.len(), u.len()),
                    letter_shares: (total > 0).then(|| counts.map(|c| c as f64 / total as f64)),
                });
                every = Some(match every {
                    None => u,
                    Some(e) => e.intersection(&u).cloned().collect(),
                });
                every_became = Some(match every_became {
                    None => became,
                    Some(e) => e.intersection(&became).cloned().collect(),
                });
            }
            let (u, b) = (every.unwrap_or_default(), every_became.unwrap_or_default());
            // Became biased under every order, among items unbiased under every order.
            let b = b.intersection(&u).count();
            rows.push(OrderRow {
                model: model.clone(),
                scheme: scheme.clone(),
                precision: precision.clone(),
                option_order: "every".into(),
                unbiased_at_bf16: u.len() as u64,
                became_biased: b as u64,
                rate: ratio(b, u.len()),
                letter_shares: None,
            });
        }
    }
    rows
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}
