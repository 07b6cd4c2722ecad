//! The logistic regression of "biased answer chosen" on bit width and category dummies.

use super::{Regression, bits_of};
use crate::analysis::stats;
use crate::store::StoredRecord;
use crate::vocab::Role;
use nalgebra::DMatrix;
use std::collections::{BTreeMap, BTreeSet};

pub(super) fn regressions(study: &[&StoredRecord]) -> Vec<Regression> {
    let mut groups: BTreeMap<(String, String), Vec<&StoredRecord>> = BTreeMap::new();
    for r in study.iter().filter(|r| r.rec.role != Role::Invalid) {
        groups
            .entry((r.model.clone(), r.scheme.clone()))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((model, scheme), recs)| {
            let cats: Vec<String> = recs
                .iter()
                .map(|r| r.rec.category.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let precisions: BTreeSet<u32> = recs.iter().map(|r| bits_of(&r.precision)).collect();
            let mut names = vec!["const".to_string(), "bits".to_string()];
            names.extend(cats.iter().skip(1).map(|c| format!("category[{c}]")));
            let k = names.len();
            let mut x = Vec::with_capacity(recs.len() * k);
            let mut y = Vec::with_capacity(recs.len());
            for r in &recs {
                x.push(1.0);
                x.push(bits_of(&r.precision) as f64);
                for c in cats.iter().skip(1) {
                    x.push(if &r.rec.category == c { 1.0 } else { 0.0 });
                }
                y.push(if r.rec.role == Role::Biased { 1.0 } else { 0.0 });
            }
            let n = recs.len();
            let (fit, note) = if precisions.len() < 2 {
                (None, Some("needs at least two precisions".to_string()))
            } else {
                let fit = stats::logistic(&DMatrix::from_row_slice(n, k, &x), &y, names);
                let note = fit
                    .is_none()
                    .then(|| "did not converge (separation or too few answers)".to_string());
                (fit, note)
            };
            Regression {
                model,
                scheme,
                n,
                fit,
                clusters: None,
                cluster_se: None,
                cluster_p: None,
                note,
            }
        })
        .collect()
}
