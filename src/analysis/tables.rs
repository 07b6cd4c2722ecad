//! The declared schemas of the report's Parquet tables: `metrics.parquet` (the `rows` of
//! `report --format json`) and `transitions.parquet` (its `transitions`), one place per
//! table. Columns are in name order, as the files have always had them.

use super::report::{Row, TransitionRow};
use crate::store::table::{Column, Get, Table};

/// `metrics.parquet`: one [`Row`] per model × scheme × precision × category.
pub const METRICS: Table<Row> = Table {
    name: "metrics.parquet",
    columns: &[
        Column {
            name: "accuracy",
            get: Get::Float(|r| r.accuracy),
        },
        Column {
            name: "anti",
            get: Get::Int(|r| Some(r.anti)),
        },
        Column {
            name: "anti_rate",
            get: Get::Float(|r| r.anti_rate),
        },
        Column {
            name: "biased",
            get: Get::Int(|r| Some(r.biased)),
        },
        Column {
            name: "bits",
            get: Get::Int(|r| Some(u64::from(r.bits))),
        },
        Column {
            name: "category",
            get: Get::Text(|r| Some(r.category.as_str())),
        },
        Column {
            name: "chi2",
            get: Get::Float(|r| r.chi2),
        },
        Column {
            name: "chi2_p",
            get: Get::Float(|r| r.chi2_p),
        },
        Column {
            name: "cohens_h",
            get: Get::Float(|r| r.cohens_h),
        },
        Column {
            name: "delta_srs",
            get: Get::Float(|r| r.delta_srs),
        },
        Column {
            name: "delta_srs_boot_high",
            get: Get::Float(|r| r.delta_srs_boot_high),
        },
        Column {
            name: "delta_srs_boot_low",
            get: Get::Float(|r| r.delta_srs_boot_low),
        },
        Column {
            name: "delta_srs_boot_se",
            get: Get::Float(|r| r.delta_srs_boot_se),
        },
        Column {
            name: "delta_srs_macro",
            get: Get::Float(|r| r.delta_srs_macro),
        },
        Column {
            name: "effect",
            get: Get::Text(|r| r.effect.as_deref()),
        },
        Column {
            name: "model",
            get: Get::Text(|r| Some(r.model.as_str())),
        },
        Column {
            name: "n",
            get: Get::Int(|r| Some(r.n)),
        },
        Column {
            name: "parse_fail_rate",
            get: Get::Float(|r| Some(r.parse_fail_rate)),
        },
        Column {
            name: "precision",
            get: Get::Text(|r| Some(r.precision.as_str())),
        },
        Column {
            name: "s_amb",
            get: Get::Float(|r| r.s_amb),
        },
        Column {
            name: "s_dis",
            get: Get::Float(|r| r.s_dis),
        },
        Column {
            name: "scheme",
            get: Get::Text(|r| Some(r.scheme.as_str())),
        },
        Column {
            name: "srs",
            get: Get::Float(|r| r.srs),
        },
        Column {
            name: "srs_ci_high",
            get: Get::Float(|r| r.srs_ci_high),
        },
        Column {
            name: "srs_ci_low",
            get: Get::Float(|r| r.srs_ci_low),
        },
        Column {
            name: "srs_macro",
            get: Get::Float(|r| r.srs_macro),
        },
        Column {
            name: "unknown",
            get: Get::Int(|r| Some(r.unknown)),
        },
        Column {
            name: "usr",
            get: Get::Float(|r| r.usr),
        },
        Column {
            name: "valid",
            get: Get::Int(|r| Some(r.valid)),
        },
    ],
};

/// `transitions.parquet`: one [`TransitionRow`] per model × scheme × precision.
pub const TRANSITIONS: Table<TransitionRow> = Table {
    name: "transitions.parquet",
    columns: &[
        Column {
            name: "became_biased",
            get: Get::Int(|r| r.became_biased),
        },
        Column {
            name: "became_unbiased",
            get: Get::Int(|r| r.became_unbiased),
        },
        Column {
            name: "biased_at_bf16",
            get: Get::Int(|r| r.biased_at_bf16),
        },
        Column {
            name: "continued_share",
            get: Get::Float(|r| r.continued_share),
        },
        Column {
            name: "expected_rate",
            get: Get::Float(|r| r.expected_rate),
        },
        Column {
            name: "flip_rate",
            get: Get::Float(|r| r.flip_rate),
        },
        Column {
            name: "items_compared",
            get: Get::Int(|r| Some(r.items_compared)),
        },
        Column {
            name: "mcnemar_items",
            get: Get::Int(|r| r.mcnemar_items),
        },
        Column {
            name: "mcnemar_p",
            get: Get::Float(|r| r.mcnemar_p),
        },
        Column {
            name: "mean_item_srs",
            get: Get::Float(|r| r.mean_item_srs),
        },
        Column {
            name: "mean_kld",
            get: Get::Float(|r| r.mean_kld),
        },
        Column {
            name: "measured_noise_floor",
            get: Get::Float(|r| r.measured_noise_floor),
        },
        Column {
            name: "model",
            get: Get::Text(|r| Some(r.model.as_str())),
        },
        Column {
            name: "noise_floor",
            get: Get::Float(|r| r.noise_floor),
        },
        Column {
            name: "note",
            get: Get::Text(|r| r.note.as_deref()),
        },
        Column {
            name: "precision",
            get: Get::Text(|r| Some(r.precision.as_str())),
        },
        Column {
            name: "rate",
            get: Get::Float(|r| r.rate),
        },
        Column {
            name: "rate_ci_high",
            get: Get::Float(|r| r.rate_ci_high),
        },
        Column {
            name: "rate_ci_low",
            get: Get::Float(|r| r.rate_ci_low),
        },
        Column {
            name: "reverse_ci_high",
            get: Get::Float(|r| r.reverse_ci_high),
        },
        Column {
            name: "reverse_ci_low",
            get: Get::Float(|r| r.reverse_ci_low),
        },
        Column {
            name: "reverse_rate",
            get: Get::Float(|r| r.reverse_rate),
        },
        Column {
            name: "scheme",
            get: Get::Text(|r| Some(r.scheme.as_str())),
        },
        Column {
            name: "unbiased_at_bf16",
            get: Get::Int(|r| r.unbiased_at_bf16),
        },
    ],
};
