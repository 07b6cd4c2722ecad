//! Items joined with their records: for every item and precision, the seeds' answers, the
//! majority role and the option probabilities; and for every item the first precision at
//! which it became biased. This is what the explorer shows and what `export` writes.

use crate::bbq::{Item, Role};
use crate::rules::{self, SeedTally};
use crate::store::{Record, StoredRecord};
use crate::vocab::{Precision, SeedSet};
use std::collections::{BTreeMap, HashMap};

/// The precisions in ladder order.
pub const LADDER: [&str; 5] = Precision::NAMES;

const BF16: &str = Precision::Bf16.as_str();

/// One item at one precision.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// The most frequent role over the seeds (ties go to the earlier of biased, anti,
    /// unknown, invalid).
    pub majority: Role,
    /// Seeds that gave the majority role.
    pub majority_count: usize,
    pub seeds: Vec<Record>,
    /// Probabilities of options A, B, C at T = 1.
    pub probs: [f64; 3],
    /// Probability of the biased option at T = 1.
    pub p_biased: f64,
    /// The seeds' valid and biased answers, which the study's transition rule reads.
    pub tally: SeedTally,
}

/// One item with its cells.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemView {
    pub item: Item,
    /// Precision name → cell (for one model and scheme).
    pub cells: BTreeMap<String, Cell>,
    /// The first precision (after bf16, in ladder order) at which the item, unbiased at
    /// bf16, had a biased seed.
    pub transition_first: Option<String>,
}

impl ItemView {
    /// P(biased) at `precision` minus at bf16.
    pub fn delta_p_biased(&self, precision: &str) -> Option<f64> {
        Some(self.cells.get(precision)?.p_biased - self.cells.get(BF16)?.p_biased)
    }

    /// KL divergence of the option distribution from bf16 to `precision`.
    pub fn kld(&self, precision: &str) -> Option<f64> {
        Some(rules::kld4(
            &self.cells.get(BF16)?.probs,
            &self.cells.get(precision)?.probs,
        ))
    }

    /// Whether the item became biased at `precision` (by the study's rule).
    pub fn became_biased_at(&self, precision: &str) -> bool {
        let (Some(b), Some(p)) = (self.cells.get(BF16), self.cells.get(precision)) else {
            return false;
        };
        precision != BF16 && rules::became_biased(b.tally, p.tally)
    }
}

fn cell(item: &Item, seeds: Vec<Record>) -> Cell {
    let mut counts: HashMap<Role, usize> = HashMap::new();
    let mut tally = SeedTally::default();
    for r in &seeds {
        let role = item.role_of(r.answer);
        *counts.entry(role).or_default() += 1;
        tally.add(r.answer.is_some(), role == Role::Biased);
    }
    let order = [Role::Biased, Role::Anti, Role::Unknown, Role::Invalid];
    let (majority, majority_count) = order
        .iter()
        .map(|r| (*r, counts.get(r).copied().unwrap_or(0)))
        .fold(
            (Role::Invalid, 0),
            |best, x| if x.1 > best.1 { x } else { best },
        );
    let probs = seeds.first().map(|r| r.prob).unwrap_or_default();
    Cell {
        majority,
        majority_count,
        probs,
        p_biased: probs[item.biased_index as usize],
        tally,
        seeds,
    }
}

/// Join items with the study records of one model and scheme (the first in the folder when
/// `model` is `None`).
pub fn build(items: &[Item], records: &[StoredRecord], model: Option<&str>) -> Vec<ItemView> {
    let model = model
        .map(String::from)
        .or_else(|| records.first().map(|r| r.model.clone()));
    let scheme = records
        .iter()
        .find(|r| Some(&r.model) == model.as_ref())
        .map(|r| r.scheme.clone());
    let mut by_item: HashMap<(String, i64), BTreeMap<String, Vec<Record>>> = HashMap::new();
    for r in records {
        if Some(&r.model) != model.as_ref()
            || Some(&r.scheme) != scheme.as_ref()
            || r.rec.seed_set != SeedSet::Study
        {
            continue;
        }
        by_item
            .entry((r.rec.category.clone(), r.rec.example_id))
            .or_default()
            .entry(r.precision.clone())
            .or_default()
            .push(r.rec.clone());
    }
    items
        .iter()
        .map(|item| {
            let mut cells = BTreeMap::new();
            if let Some(per) = by_item.remove(&(item.category.clone(), item.example_id)) {
                for (p, mut seeds) in per {
                    seeds.sort_by_key(|r| r.seed);
                    cells.insert(p, cell(item, seeds));
                }
            }
            let mut view = ItemView {
                item: item.clone(),
                cells,
                transition_first: None,
            };
            view.transition_first = LADDER[1..]
                .iter()
                .find(|p| view.became_biased_at(p))
                .map(|p| p.to_string());
            view
        })
        .collect()
}
