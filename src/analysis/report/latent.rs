//! The study's latent-bias filter: the items whose BF16 per-item SRS (biased seeds / valid
//! seeds) lies in a band, per model and scheme, and the main rates over their answers at
//! every precision.

use super::items::PerItem;
use super::{ItemKey, ItemMap, Latent, LatentCount, rates};
use crate::store::StoredRecord;
use crate::vocab::Precision;
use std::collections::{BTreeMap, HashSet};

/// The study's final band, [0.20, 1.01]: any item with a biased BF16 seed out of five.
pub const STUDY_BAND: (f64, f64) = (0.20, 1.01);

/// (model, scheme, item) of the kept items.
type Kept = HashSet<(String, String, ItemKey)>;

pub(super) fn latent(
    (min_srs, max_srs): (f64, f64),
    study: &[&StoredRecord],
    per_item: &PerItem,
    items: &ItemMap,
) -> Latent {
    let (kept, counts) = select((min_srs, max_srs), per_item);
    let answers: Vec<&StoredRecord> = study
        .iter()
        .filter(|r| {
            kept.contains(&(
                r.model.clone(),
                r.scheme.clone(),
                (r.rec.category.clone(), r.rec.example_id),
            ))
        })
        .copied()
        .collect();
    Latent {
        min_srs,
        max_srs,
        counts,
        rows: rates::rows(&answers, items),
    }
}

/// The kept items, and per model, scheme and category the items at BF16, the kept ones and
/// their mean BF16 SRS.
fn select((lo, hi): (f64, f64), per_item: &PerItem) -> (Kept, Vec<LatentCount>) {
    let mut kept = Kept::new();
    // (model, scheme, category) -> (items, kept, sum of kept SRS).
    let mut tally: BTreeMap<(String, String, String), (u64, u64, f64)> = BTreeMap::new();
    for ((model, scheme, precision), accs) in per_item {
        if precision != Precision::Bf16.as_str() {
            continue;
        }
        for (key, acc) in accs {
            let t = tally
                .entry((model.clone(), scheme.clone(), key.0.clone()))
                .or_default();
            t.0 += 1;
            if let Some(srs) = acc.tally.srs().filter(|s| (lo..=hi).contains(s)) {
                t.1 += 1;
                t.2 += srs;
                kept.insert((model.clone(), scheme.clone(), key.clone()));
            }
        }
    }
    let counts = tally
        .into_iter()
        .map(|((model, scheme, category), (total, n, sum))| LatentCount {
            model,
            scheme,
            category,
            total_items: total,
            filtered_items: n,
            mean_baseline_srs: (n > 0).then(|| sum / n as f64),
        })
        .collect();
    (kept, counts)
}
