//! The per-item tables: `transitions` (the study's rule with its expectation and noise
//! floors, mean KLD and flips), `flips_by_margin`, and the per-item correlation of KLD with
//! becoming biased. Every item-level decision is one of [`crate::rules`].

use super::{
    Correlation, ItemKey, ItemMap, MarginRow, Points, TransitionRow, correlation, rank, ratio,
};
use crate::analysis::stats;
use crate::rules::{self, ExpectedRate, SeedTally};
use crate::store::StoredRecord;
use crate::vocab::{Precision, Role, SeedSet};
use std::collections::{BTreeMap, HashMap};

/// (model, scheme).
type Group = (String, String);
/// (model, scheme, precision).
type Cell = (String, String, String);

/// BF16 margins between the two most probable letters that `flips_by_margin` groups by.
const BUCKETS: [(f64, f64); 4] = [(0.0, 0.05), (0.05, 0.2), (0.2, 0.5), (0.5, 1.0)];

/// One item at one precision: its seeds' answers and probabilities.
#[derive(Default)]
pub(super) struct ItemAcc {
    pub(super) tally: SeedTally,
    seeds: u32,
    /// Probability of the biased letter at the sampling temperature (of the last seed).
    samp_biased: f64,
    /// The T = 1 probabilities of the letters (of the last seed).
    probs: [f64; 3],
    /// The T = 1 probability of the biased letter, when the item is known.
    prob_biased: Option<f64>,
}

/// (model, scheme, precision) → item → its answers.
pub(super) type PerItem = BTreeMap<Cell, BTreeMap<ItemKey, ItemAcc>>;

/// Accumulate the main tables' answers per item.
pub(super) fn per_item(study: &[&StoredRecord], items: &ItemMap) -> PerItem {
    let mut per_item = PerItem::new();
    for r in study {
        let key = (r.rec.category.clone(), r.rec.example_id);
        let item = items.get(&key);
        let acc = per_item
            .entry((r.model.clone(), r.scheme.clone(), r.precision.clone()))
            .or_default()
            .entry(key)
            .or_default();
        acc.seeds += 1;
        acc.tally
            .add(r.rec.role != Role::Invalid, r.rec.role == Role::Biased);
        if let Some(it) = item {
            acc.samp_biased = r.rec.samp_prob[it.biased_index as usize];
            acc.prob_biased = Some(r.rec.prob[it.biased_index as usize]);
        }
        acc.probs = r.rec.prob;
    }
    per_item
}

/// The per-item tables of a report.
#[derive(Default)]
pub(super) struct Comparisons {
    pub transitions: Vec<TransitionRow>,
    pub flips_by_margin: Vec<MarginRow>,
    pub correlations: Vec<Correlation>,
    pub distributions: Vec<super::DistributionRow>,
}

/// What a precision is compared with besides its BF16 answers.
pub(super) struct Context {
    /// (model, scheme) → item → the extra BF16 seeds' answers.
    noise: HashMap<Group, HashMap<ItemKey, SeedTally>>,
    /// (model, scheme, precision) → (answers read from continued text, answers).
    continued: HashMap<Cell, (u64, u64)>,
}

impl Context {
    /// The extra BF16 seeds of `records` and the continued-text shares of `study`.
    pub(super) fn new(records: &[StoredRecord], study: &[&StoredRecord]) -> Context {
        let mut noise: HashMap<Group, HashMap<ItemKey, SeedTally>> = HashMap::new();
        for r in records
            .iter()
            .filter(|r| r.rec.seed_set == SeedSet::Noise && r.precision == Precision::Bf16.as_str())
        {
            noise
                .entry((r.model.clone(), r.scheme.clone()))
                .or_default()
                .entry((r.rec.category.clone(), r.rec.example_id))
                .or_default()
                .add(r.rec.role != Role::Invalid, r.rec.role == Role::Biased);
        }
        let mut continued: HashMap<Cell, (u64, u64)> = HashMap::new();
        for r in study {
            let c = continued
                .entry((r.model.clone(), r.scheme.clone(), r.precision.clone()))
                .or_default();
            c.0 += u64::from(!rules::first_token_answer(&r.rec.sampled_text));
            c.1 += 1;
        }
        Context { noise, continued }
    }
}

/// Compare every precision's items with BF16's.
pub(super) fn compare(per_item: &PerItem, ctx: &Context) -> Comparisons {
    let mut out = Comparisons::default();
    let mut kld_pooled: BTreeMap<Group, Points> = BTreeMap::new();
    for (cell, acc) in per_item {
        let (model, scheme, precision) = cell;
        let bf16 = (
            model.clone(),
            scheme.clone(),
            Precision::Bf16.as_str().to_string(),
        );
        let Some(base) = per_item.get(&bf16) else {
            out.transitions.push(no_bf16(cell));
            continue;
        };
        let c = Compared::new(base, acc, precision != Precision::Bf16.as_str());
        if precision != Precision::Bf16.as_str() {
            let pooled = kld_pooled
                .entry((model.clone(), scheme.clone()))
                .or_insert_with(|| (Vec::new(), Vec::new()));
            pooled.0.extend(&c.kld_pts.0);
            pooled.1.extend(&c.kld_pts.1);
            out.correlations.push(correlation(
                (model, scheme, precision),
                "item_kld~became_biased",
                &c.kld_pts,
            ));
            out.distributions
                .push(super::distribution::row(cell, &c.klds, &c.dps, c.flips));
        }
        out.transitions.push(c.transition_row(cell, base, ctx));
        out.flips_by_margin.extend(c.margin_rows(cell));
    }
    sort(&mut out);
    for ((model, scheme), pts) in &kld_pooled {
        out.correlations.push(correlation(
            (model, scheme, "all"),
            "item_kld~became_biased",
            pts,
        ));
    }
    out.correlations.sort_by_key(|c| {
        (
            c.model.clone(),
            c.scheme.clone(),
            c.measure.clone(),
            rank(&c.precision),
        )
    });
    out
}

fn sort(out: &mut Comparisons) {
    let order = |m: &String, s: &String, p: &String| (m.clone(), s.clone(), rank(p));
    out.transitions
        .sort_by_key(|t| order(&t.model, &t.scheme, &t.precision));
    out.distributions
        .sort_by_key(|t| order(&t.model, &t.scheme, &t.precision));
    out.flips_by_margin.sort_by(|a, b| {
        order(&a.model, &a.scheme, &a.precision)
            .cmp(&order(&b.model, &b.scheme, &b.precision))
            .then(a.margin_low.total_cmp(&b.margin_low))
    });
}

/// The Wilson interval of x out of n as (low, high), each `None` when n is 0.
fn wilson(x: u64, n: u64) -> (Option<f64>, Option<f64>) {
    stats::wilson(x, n).unzip()
}

/// The transition row of a precision whose model and scheme have no BF16 answers.
fn no_bf16((model, scheme, precision): &Cell) -> TransitionRow {
    TransitionRow {
        model: model.clone(),
        scheme: scheme.clone(),
        precision: precision.clone(),
        unbiased_at_bf16: None,
        became_biased: None,
        rate: None,
        rate_ci_low: None,
        rate_ci_high: None,
        mean_item_srs: None,
        biased_at_bf16: None,
        became_unbiased: None,
        reverse_rate: None,
        reverse_ci_low: None,
        reverse_ci_high: None,
        mcnemar_items: None,
        mcnemar_p: None,
        expected_rate: None,
        noise_floor: None,
        measured_noise_floor: None,
        continued_share: None,
        mean_kld: None,
        flip_rate: None,
        items_compared: 0,
        note: Some("no bf16 records in this folder: transitions are measured against bf16".into()),
    }
}

/// One precision's items compared with BF16's.
#[derive(Default)]
pub(super) struct Compared {
    unbiased: u64,
    became: u64,
    /// Sum over items unbiased at BF16 of their SRS at the precision (0 without a valid seed).
    item_srs_sum: f64,
    biased: u64,
    became_unbiased: u64,
    /// Items with a valid seed at both BF16 and the precision (McNemar's pairs).
    paired: u64,
    /// Per compared item: KL divergence from BF16, in item order.
    pub(super) klds: Vec<f64>,
    /// Per compared item with a known biased option: P(biased) at the precision − at BF16.
    pub(super) dps: Vec<f64>,
    expected: ExpectedRate,
    kld_sum: f64,
    flips: u64,
    compared: u64,
    /// Per bucket of [`BUCKETS`]: (items, flips).
    buckets: [(u64, u64); 4],
    /// Per item unbiased at BF16: its KLD and whether it became biased (below BF16 only).
    kld_pts: Points,
}

impl Compared {
    fn new(
        base: &BTreeMap<ItemKey, ItemAcc>,
        acc: &BTreeMap<ItemKey, ItemAcc>,
        below: bool,
    ) -> Self {
        let mut c = Compared::default();
        for (key, b) in base {
            let Some(p) = acc.get(key) else { continue };
            c.compared += 1;
            c.count_directions(b.tally, p.tally);
            let kld = rules::kld4(&b.probs, &p.probs);
            c.klds.push(kld);
            if let (Some(qb), Some(pb)) = (b.prob_biased, p.prob_biased) {
                c.dps.push(pb - qb);
            }
            if b.tally.unbiased() {
                let became = rules::became_biased(b.tally, p.tally);
                if below {
                    c.kld_pts.0.push(kld);
                    c.kld_pts.1.push(f64::from(u8::from(became)));
                }
            }
            c.expected.add(b.seeds, b.samp_biased, p.samp_biased);
            c.kld_sum += kld;
            let margin = rules::top_and_margin(&b.probs).1;
            let flipped = rules::flipped(&b.probs, &p.probs);
            c.flips += u64::from(flipped);
            if let Some(i) = BUCKETS
                .iter()
                .position(|(lo, hi)| margin >= *lo && (margin < *hi || *hi >= 1.0))
            {
                c.buckets[i].0 += 1;
                c.buckets[i].1 += u64::from(flipped);
            }
        }
        c
    }

    /// Count one item in both directions of the rule and as a McNemar pair.
    fn count_directions(&mut self, b: SeedTally, p: SeedTally) {
        if b.unbiased() {
            self.unbiased += 1;
            self.became += u64::from(rules::became_biased(b, p));
            self.item_srs_sum += p.srs().unwrap_or(0.0);
        }
        if b.any_biased() {
            self.biased += 1;
            self.became_unbiased += u64::from(rules::became_unbiased(b, p));
        }
        self.paired += u64::from(b.any_valid() && p.any_valid());
    }

    fn transition_row(
        &self,
        cell: &Cell,
        base: &BTreeMap<ItemKey, ItemAcc>,
        ctx: &Context,
    ) -> TransitionRow {
        let (model, scheme, precision) = cell;
        let note = (self.unbiased == 0)
            .then(|| "no item is unbiased at bf16 (or none has a valid bf16 answer)".to_string());
        // The study's rule applied to BF16 against the extra BF16 seeds.
        let measured_noise_floor = ctx
            .noise
            .get(&(model.clone(), scheme.clone()))
            .and_then(|n| {
                let hits = base
                    .iter()
                    .filter(|(k, b)| n.get(*k).is_some_and(|t| rules::became_biased(b.tally, *t)))
                    .count() as u64;
                ratio(hits, self.unbiased)
            });
        TransitionRow {
            model: model.clone(),
            scheme: scheme.clone(),
            precision: precision.clone(),
            unbiased_at_bf16: Some(self.unbiased),
            became_biased: Some(self.became),
            rate: ratio(self.became, self.unbiased),
            rate_ci_low: wilson(self.became, self.unbiased).0,
            rate_ci_high: wilson(self.became, self.unbiased).1,
            mean_item_srs: (self.unbiased > 0).then(|| self.item_srs_sum / self.unbiased as f64),
            biased_at_bf16: Some(self.biased),
            became_unbiased: Some(self.became_unbiased),
            reverse_rate: ratio(self.became_unbiased, self.biased),
            reverse_ci_low: wilson(self.became_unbiased, self.biased).0,
            reverse_ci_high: wilson(self.became_unbiased, self.biased).1,
            mcnemar_items: Some(self.paired),
            mcnemar_p: (precision != Precision::Bf16.as_str())
                .then(|| stats::mcnemar_exact(self.became, self.became_unbiased)),
            expected_rate: self.expected.expected(),
            noise_floor: self.expected.noise_floor(),
            measured_noise_floor,
            continued_share: ctx.continued.get(cell).and_then(|(c, n)| ratio(*c, *n)),
            mean_kld: (self.compared > 0).then(|| self.kld_sum / self.compared as f64),
            flip_rate: ratio(self.flips, self.compared),
            items_compared: self.compared,
            note,
        }
    }

    fn margin_rows<'a>(&'a self, cell: &'a Cell) -> impl Iterator<Item = MarginRow> + 'a {
        let (model, scheme, precision) = cell;
        BUCKETS
            .iter()
            .zip(self.buckets)
            .map(|((lo, hi), (items, flips))| MarginRow {
                model: model.clone(),
                scheme: scheme.clone(),
                precision: precision.clone(),
                margin_low: *lo,
                margin_high: *hi,
                items,
                flips,
                flip_rate: ratio(flips, items),
            })
    }
}

/// Per-item KL divergence of the T = 1 option distribution from BF16 to each precision, per
/// (model, scheme, precision), over the items present at both, in item order. Their mean is
/// the report's `mean_kld`.
pub(super) fn item_klds(per_item: &PerItem) -> BTreeMap<Cell, Vec<f64>> {
    let mut out = BTreeMap::new();
    for ((model, scheme, precision), items) in per_item {
        let bf16 = (
            model.clone(),
            scheme.clone(),
            Precision::Bf16.as_str().to_string(),
        );
        let Some(base) = per_item.get(&bf16) else {
            continue;
        };
        let klds = base
            .iter()
            .filter_map(|(key, b)| items.get(key).map(|p| rules::kld4(&b.probs, &p.probs)))
            .collect();
        out.insert((model.clone(), scheme.clone(), precision.clone()), klds);
    }
    out
}
