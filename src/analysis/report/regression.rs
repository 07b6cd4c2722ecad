//! The logistic regression of "biased answer chosen" on bit width and category dummies, with
//! the naive (Wald) standard errors and cluster-robust ones, clustered by item.

use super::{Regression, bits_of};
use crate::analysis::stats;
use crate::store::StoredRecord;
use crate::vocab::Role;
use nalgebra::DMatrix;
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
        .map(|((model, scheme), recs)| fit_group(model, scheme, &recs))
        .collect()
}

/// The design of one model and scheme's valid answers: a constant, the bit width and one
/// indicator per category but the first.
struct Design {
    names: Vec<String>,
    x: DMatrix<f64>,
    y: Vec<f64>,
    /// Each answer's item, numbered in order of first appearance.
    cluster: Vec<usize>,
    clusters: usize,
}

fn design(recs: &[&StoredRecord]) -> Design {
    let cats: Vec<String> = recs
        .iter()
        .map(|r| r.rec.category.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut names = vec!["const".to_string(), "bits".to_string()];
    names.extend(cats.iter().skip(1).map(|c| format!("category[{c}]")));
    let k = names.len();
    let mut x = Vec::with_capacity(recs.len() * k);
    let mut y = Vec::with_capacity(recs.len());
    let mut ids: HashMap<(&str, i64), usize> = HashMap::new();
    let mut cluster = Vec::with_capacity(recs.len());
    for r in recs {
        x.push(1.0);
        x.push(bits_of(&r.precision) as f64);
        for c in cats.iter().skip(1) {
            x.push(if &r.rec.category == c { 1.0 } else { 0.0 });
        }
        y.push(if r.rec.role == Role::Biased { 1.0 } else { 0.0 });
        let next = ids.len();
        cluster.push(
            *ids.entry((r.rec.category.as_str(), r.rec.example_id))
                .or_insert(next),
        );
    }
    Design {
        names,
        x: DMatrix::from_row_slice(recs.len(), k, &x),
        y,
        cluster,
        clusters: ids.len(),
    }
}

fn fit_group(model: String, scheme: String, recs: &[&StoredRecord]) -> Regression {
    let precisions: BTreeSet<u32> = recs.iter().map(|r| bits_of(&r.precision)).collect();
    let d = design(recs);
    let mut out = Regression {
        model,
        scheme,
        n: recs.len(),
        fit: None,
        clusters: Some(d.clusters as u64),
        cluster_se: None,
        cluster_p: None,
        note: None,
    };
    if precisions.len() < 2 {
        out.note = Some("needs at least two precisions".to_string());
        return out;
    }
    out.fit = stats::logistic(&d.x, &d.y, d.names.clone());
    match &out.fit {
        Some(fit) => {
            out.cluster_se = stats::cluster_se(&d.x, &d.y, &fit.coef, &d.cluster);
            out.cluster_p = out
                .cluster_se
                .as_ref()
                .and_then(|se| stats::wald_p(&fit.coef, se));
        }
        None => {
            out.note = Some("did not converge (separation or too few answers)".to_string());
        }
    }
    out
}
