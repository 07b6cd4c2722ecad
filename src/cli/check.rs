//! The pure config check: the study flags as typed, checked values, before anything reads a
//! file, a model or a device. Every refusal here is an input error naming its flag; a list
//! flag that names a value twice is refused, since it would count work twice.

use super::args::{STUDY_CATEGORIES, StudyArgs};
use crate::bbq::{self, Conditions};
use crate::engine::{Compute, Precision, Scheme};
use crate::error::{Error, Result};
use crate::prompt::OptionOrder;
use crate::store::Shard;

/// The study flags after the check.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub categories: Vec<String>,
    pub conditions: Conditions,
    /// `None` for `all`.
    pub limit: Option<usize>,
    pub precisions: Vec<Precision>,
    /// Whether `--precisions` was given (else an MLX folder may choose its own).
    pub precisions_given: bool,
    pub scheme: Scheme,
    pub compute: Compute,
    pub shard: Option<Shard>,
    pub option_orders: Vec<OptionOrder>,
    pub seeds: Vec<u64>,
    pub noise_seeds: Vec<u64>,
    /// At least 1; `None`: chosen with the device (see `engine::device::default_part_size`).
    pub part_size: Option<usize>,
}

/// Check the study flags; no I/O.
pub fn check(a: &StudyArgs) -> Result<Config> {
    no_repeats("--model", &a.models)?;
    let categories = a.shared.categories_or(STUDY_CATEGORIES);
    no_repeats("--categories", &categories)?;
    bbq::validate_categories(&categories)?;
    let precisions = a.shared.precisions_or_ladder();
    if precisions.is_empty() {
        return Err(Error::Input("--precisions is empty".into()));
    }
    no_repeats("--precisions", &precisions)?;
    let shard = a.shard;
    let option_orders = a.option_orders.0.clone();
    check_seeds(&a.seeds, &a.noise_seeds)?;
    if a.ppl_sequences > 0 && a.ppl_seq_len < 2 {
        return Err(Error::Input("--ppl-seq-len must be at least 2".into()));
    }
    Ok(Config {
        categories,
        conditions: a.conditions,
        limit: a.shared.limit_or(100),
        precisions,
        precisions_given: a.shared.precisions.is_some(),
        scheme: a.shared.scheme,
        compute: a.scoring.compute,
        shard,
        option_orders,
        seeds: a.seeds.clone(),
        noise_seeds: a.noise_seeds.clone(),
        part_size: a.scoring.part_size.map(|n| n.max(1)),
    })
}

/// `--seeds` is not empty, neither list repeats a seed, and no seed is in both.
fn check_seeds(seeds: &[u64], noise_seeds: &[u64]) -> Result<()> {
    if seeds.is_empty() {
        return Err(Error::Input("--seeds is empty".into()));
    }
    no_repeats("--seeds", seeds)?;
    no_repeats("--noise-seeds", noise_seeds)?;
    if let Some(s) = noise_seeds.iter().find(|s| seeds.contains(s)) {
        return Err(Error::Input(format!(
            "--noise-seeds must differ from --seeds; {s} is in both"
        )));
    }
    Ok(())
}

/// Refuses a list flag that names a value twice (it would count items, records or work
/// twice).
pub fn no_repeats<T: PartialEq + std::fmt::Display>(flag: &str, values: &[T]) -> Result<()> {
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            return Err(Error::Input(format!("{flag} names {v} twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn study(args: &[&str]) -> StudyArgs {
        let cli = Cli::try_parse_from(std::iter::once("stereoscope").chain(args.iter().copied()))
            .expect("flags parse");
        assert!(cli.command.is_none());
        cli.study
    }

    fn refused(args: &[&str]) -> String {
        check(&study(args)).expect_err("refused").to_string()
    }

    #[test]
    fn the_defaults_are_the_study() {
        let c = check(&study(&[])).expect("defaults pass");
        assert_eq!(
            c.categories,
            [
                "Age",
                "Gender_identity",
                "Race_ethnicity",
                "Religion",
                "SES"
            ]
        );
        assert_eq!(c.conditions, Conditions::Ambig);
        assert_eq!(c.limit, Some(100));
        assert_eq!(c.precisions, Precision::ALL);
        assert!(!c.precisions_given);
        assert_eq!((c.scheme, c.compute), (Scheme::Mlx, Compute::Dequant));
        assert_eq!(c.seeds, [42, 123, 456, 789, 1024]);
        assert!(c.noise_seeds.is_empty() && c.shard.is_none());
        assert_eq!(c.option_orders, [OptionOrder::STUDY]);
        assert_eq!(c.part_size, None);
    }

    #[test]
    fn typed_flags_parse_lists_and_names() {
        let c = check(&study(&[
            "--categories",
            "Age, Religion",
            "--limit",
            "all",
            "--precisions",
            "bf16,q4",
            "--seeds",
            "1, 2",
            "--noise-seeds",
            "7,8",
            "--scheme",
            "gguf",
            "--compute",
            "kernels",
            "--conditions",
            "both",
            "--shard",
            "2/3",
            "--option-orders",
            "cyclic",
            "--part-size",
            "0",
        ]))
        .expect("valid");
        assert_eq!(c.categories, ["Age", "Religion"]);
        assert_eq!(c.limit, None);
        assert_eq!(c.precisions, [Precision::Bf16, Precision::Q4]);
        assert!(c.precisions_given);
        assert_eq!((c.seeds, c.noise_seeds), (vec![1, 2], vec![7, 8]));
        assert_eq!((c.scheme, c.compute), (Scheme::Gguf, Compute::Kernels));
        assert_eq!(c.conditions, Conditions::Both);
        assert_eq!(c.shard, Some(Shard { index: 2, count: 3 }));
        assert_eq!(c.option_orders.len(), 3);
        assert_eq!(c.part_size, Some(1));
    }

    #[test]
    fn a_repeated_value_is_refused_naming_flag_and_value() {
        for (flag, value, named) in [
            ("--categories", "Age,Religion,Age", "Age"),
            ("--seeds", "42,123,42", "42"),
            ("--precisions", "bf16,q4,bf16", "bf16"),
            ("--noise-seeds", "7,7", "7"),
        ] {
            let e = refused(&[flag, value]);
            assert_eq!(e, format!("{flag} names {named} twice"));
        }
        // --model is repeated rather than comma-separated.
        let e = refused(&["--model", "a.gguf", "--model", "a.gguf"]);
        assert_eq!(e, "--model names a.gguf twice");
    }

    #[test]
    fn bad_combinations_name_their_flag() {
        assert!(refused(&["--categories", "Age,Religon"]).contains("Religon"));
        assert!(refused(&["--noise-seeds", "42"]).contains("--noise-seeds must differ"));
        assert!(refused(&["--ppl-seq-len", "1"]).contains("--ppl-seq-len"));
        // Perplexity off: the sequence length does not matter.
        assert!(check(&study(&["--ppl-sequences", "0", "--ppl-seq-len", "1"])).is_ok());
    }

    #[test]
    fn clap_refuses_values_outside_the_vocabulary() {
        for args in [
            ["--precisions", "bf16,q5"],
            ["--limit", "0"],
            ["--limit", "zero"],
            ["--scheme", "awq"],
            ["--compute", "fast"],
            ["--conditions", "ambiguous"],
            ["--device", "tpu"],
            ["--seeds", "x"],
            ["--shard", "3/2"],
            ["--option-orders", "120"],
            ["--option-orders", "013"],
        ] {
            let argv = std::iter::once("stereoscope").chain(args);
            let e = Cli::try_parse_from(argv).expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(args[0]), "{args:?}: {e}");
        }
        // The parsers' own messages say what is wrong.
        let says = |args: [&str; 2]| {
            let argv = std::iter::once("stereoscope").chain(args);
            Cli::try_parse_from(argv).expect_err("refused").to_string()
        };
        assert!(says(["--shard", "3/2"]).contains("--shard must be I/N"));
        assert!(says(["--option-orders", "120"]).contains("012"));
    }

    #[test]
    fn bench_and_logprobs_share_the_flags_with_their_own_defaults() {
        let cli = Cli::try_parse_from(["stereoscope", "bench"]).expect("bench");
        let Some(Command::Bench(b)) = cli.command else {
            panic!("bench")
        };
        assert_eq!(b.shared.limit_or(40), Some(40));
        assert_eq!(b.shared.categories_or("Age,Religion"), ["Age", "Religion"]);
        assert_eq!(b.scoring.compute, Compute::Dequant);
        let cli = Cli::try_parse_from([
            "stereoscope",
            "logprobs",
            "--model",
            "m",
            "--out",
            "o",
            "--device",
            "cuda:1",
            "--precisions",
            "q8,q3",
        ])
        .expect("logprobs");
        let Some(Command::Logprobs(l)) = cli.command else {
            panic!("logprobs")
        };
        assert_eq!(
            l.shared.device.map(|d| d.to_string()),
            Some("cuda:1".into())
        );
        assert_eq!(
            l.shared.precisions_or_ladder(),
            [Precision::Q8, Precision::Q3]
        );
    }
}
