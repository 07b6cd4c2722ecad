//! The high args of the study: after the pure check, what needs the environment (prompt
//! files, the perplexity corpus, the device, BBQ, models, the results folder) is prepared
//! once into a [`Prepared`] study, whose methods run it headless, in the explorer, or print
//! the plan for `--dry-run`.

use super::args::{DeviceArg, StudyArgs};
use super::check::{Config, check};
use crate::analysis;
use crate::bbq::{self, LocateSpec, SelectSpec};
use crate::engine::{self, Precision, Scheme};
use crate::error::{Error, Result};
use crate::store::ResultsDir;
use crate::study::{self, Event, StudySpec};
use std::path::PathBuf;

/// A study ready to run: plan checked, results folder prepared.
#[derive(Clone)]
pub struct Prepared {
    spec: StudySpec,
    models: Vec<study::PlannedModel>,
    sel: bbq::Selection,
    plan: crate::store::Plan,
    rd: ResultsDir,
    device: candle_core::Device,
    device_name: String,
    batch_size_given: bool,
}

/// The plan before the results folder is touched.
struct Planned {
    spec: StudySpec,
    models: Vec<study::PlannedModel>,
    sel: bbq::Selection,
    plan: crate::store::Plan,
    out: PathBuf,
    device: candle_core::Device,
    device_name: String,
}

impl Prepared {
    /// The study as a job runs it.
    fn study(&self) -> study::Study {
        study::Study {
            spec: self.spec.clone(),
            models: self.models.clone(),
            sel: self.sel.clone(),
            plan: self.plan.clone(),
            dir: self.rd.clone(),
            device: self.device.clone(),
            batch_size_given: self.batch_size_given,
        }
    }

    /// Run headless with a progress bar, then print throughput and the report.
    pub fn run_headless(&self) -> Result<()> {
        let (outcome, measured) = run_with_bar(self.study());
        let outcome = outcome?;
        print_throughput(&measured);
        if let Some(s) = outcome.dir.shard {
            println!(
                "shard {}/{} finished in {}. When every shard has finished: stereoscope merge OUT {}",
                s.index,
                s.count,
                outcome.dir.root.display(),
                outcome.dir.root.display()
            );
            return Ok(());
        }
        let report = analysis::write_report(&outcome.dir)?;
        println!("{}", report.table());
        println!("results: {}", outcome.dir.root.display());
        Ok(())
    }

    /// Run in the explorer, the study as a background job.
    pub fn run_in_explorer(&self) -> Result<()> {
        crate::tui::run(&self.rd.root, &self.device_name, Some(self.study()))
    }
}

/// The study from the command line: headless when asked, for `--dry-run` or when stdout is
/// not a terminal; else in the explorer.
pub fn run(a: &StudyArgs) -> Result<()> {
    use std::io::IsTerminal;
    let headless = a.batch || a.dry_run || !std::io::stdout().is_terminal();
    if !headless && a.shard.is_some() {
        return Err(Error::Input(
            "--shard runs headless: add --batch (open the merged folder afterwards)".into(),
        ));
    }
    let Some(prepared) = prepare(a)? else {
        return Ok(());
    };
    match headless {
        true => prepared.run_headless(),
        false => prepared.run_in_explorer(),
    }
}

/// Check the flags, select items, resolve models and prepare the results folder; `None`
/// for `--dry-run` (the plan is printed).
fn prepare(a: &StudyArgs) -> Result<Option<Prepared>> {
    // The pure check first, so bad flags fail before a file is read or a model loads.
    let config = check(a)?;
    let p = plan(a, &config)?;
    let n_items = p.sel.items.len();
    let passes = n_items * p.spec.precisions.len() * p.models.len() * p.spec.option_orders.len();
    print_plan(&p, passes, a.batch_size.is_some());
    if a.dry_run {
        dry_run(&p, passes / n_items.max(1))?;
        return Ok(None);
    }
    if let Some(s) = config.shard {
        let parts = n_items.div_ceil(p.spec.part_size);
        let mine = (0..parts).filter(|k| s.owns(*k)).count();
        eprintln!(
            "shard {}/{}: {mine} of {parts} part(s) of {} item(s) per model and precision",
            s.index, s.count, p.spec.part_size
        );
    }
    let (rd, added) = ResultsDir::prepare(&p.out, &p.plan, config.shard)?;
    if !added.is_empty() {
        eprintln!(
            "extending {}: adding {}; what is on disk is kept",
            p.out.display(),
            added.join(", ")
        );
    }
    Ok(Some(Prepared {
        spec: p.spec,
        models: p.models,
        sel: p.sel,
        plan: p.plan,
        rd,
        device: p.device,
        device_name: p.device_name,
        batch_size_given: a.batch_size.is_some(),
    }))
}

/// Items per part: `--part-size`; else, resuming into an `--out` that holds a run, that
/// run's; else the device's default.
fn part_size(a: &StudyArgs, c: &Config, device: &candle_core::Device) -> usize {
    if let Some(n) = c.part_size {
        return n;
    }
    let folder = a.out.as_ref().and_then(|out| {
        let dir = ResultsDir {
            root: out.clone(),
            shard: c.shard,
        };
        let manifest = crate::store::manifest::read_manifest(&dir.manifest_path()).ok()?;
        Some(manifest.plan.part_size.max(1))
    });
    folder.unwrap_or_else(|| engine::device::default_part_size(device))
}

/// The plan of checked flags: prompt, corpus, device, items and models.
fn plan(a: &StudyArgs, c: &Config) -> Result<Planned> {
    let protocol = protocol(a)?;
    let ppl_corpus = ppl_corpus(a)?;
    let device_arg = a.shared.device_or(DeviceArg::Auto);
    let (device, device_name) = engine::select_device(&device_arg.to_string())?;
    let mut sel = select_items(a, c)?;
    let (resolved, models, precisions) = plan_models(a, c)?;
    let spec = StudySpec {
        models: resolved,
        scheme: c.scheme,
        precisions,
        seeds: c.seeds.clone(),
        noise_seeds: c.noise_seeds.clone(),
        compute: c.compute,
        device: device_name.clone(),
        part_size: part_size(a, c, &device),
        batch_size: a
            .batch_size
            .unwrap_or_else(|| engine::device::default_batch_size(&device))
            .max(1),
        ppl: (a.ppl_sequences > 0).then_some(study::PplSpec {
            sequences: a.ppl_sequences,
            seq_len: a.ppl_seq_len,
            corpus: ppl_corpus,
        }),
        protocol,
        option_orders: c.option_orders.clone(),
    };
    if a.skip_bad {
        skip_overlong(&spec, &models, &mut sel)?;
    }
    let selection_args = serde_json::json!({
        "categories": c.categories, "conditions": c.conditions, "limit": c.limit,
    });
    let plan = study::plan_json(&spec, &models, &sel, &selection_args);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| study::default_out(&models, &plan));
    Ok(Planned {
        spec,
        models,
        sel,
        plan,
        out,
        device,
        device_name,
    })
}

/// `--skip-bad`: leave out the items that do not fit a model's positions (each model's
/// source is loaded once more for its tokenizer and config), saying so; none left is an error.
fn skip_overlong(
    spec: &StudySpec,
    models: &[study::PlannedModel],
    sel: &mut bbq::Selection,
) -> Result<()> {
    let n = study::skip_overlong(spec, models, sel)?;
    if n > 0 {
        let first = sel
            .skipped
            .len()
            .checked_sub(n)
            .and_then(|i| sel.skipped.get(i))
            .cloned()
            .unwrap_or_default();
        eprintln!(
            "warning: --skip-bad left out {n} item(s) too long for the model (listed in the manifest); the first: {first}"
        );
    }
    if sel.items.is_empty() {
        return Err(Error::Input(
            "no items left: every selected item is too long for the model".into(),
        ));
    }
    Ok(())
}

/// The perplexity corpus, read once to check it (`None`: the run's BBQ prompts, or no
/// perplexity stage).
fn ppl_corpus(a: &StudyArgs) -> Result<Option<PathBuf>> {
    match &a.ppl_corpus {
        Some(c) if a.ppl_sequences > 0 => {
            let path = engine::perplexity::resolve_corpus(c)?;
            engine::perplexity::parse_corpus(&path)?;
            Ok(Some(path))
        }
        _ => Ok(None),
    }
}

/// The BBQ items of the plan, with warnings for skipped lines and missing categories.
fn select_items(a: &StudyArgs, c: &Config) -> Result<bbq::Selection> {
    let dir = bbq::locate(
        &LocateSpec {
            dir: a.shared.bbq_dir.clone(),
            download: true,
        },
        &c.categories,
    )?;
    let select = SelectSpec {
        categories: c.categories.clone(),
        conditions: c.conditions,
        limit: c.limit,
        skip_bad: a.skip_bad,
    };
    let sel = bbq::select(&dir, &select)?;
    if let Some(first) = sel.skipped.first() {
        eprintln!(
            "warning: --skip-bad left out {} malformed BBQ line(s) (listed in the manifest); the first: {first}",
            sel.skipped.len()
        );
    }
    for m in &sel.missing {
        eprintln!(
            "warning: BBQ category {m} has no file in {}; going on without it",
            dir.path.display()
        );
    }
    Ok(sel)
}

/// The models resolved and planned with their checkpoints, and the precisions they run.
fn plan_models(
    a: &StudyArgs,
    c: &Config,
) -> Result<(
    Vec<engine::source::Resolved>,
    Vec<study::PlannedModel>,
    Vec<Precision>,
)> {
    let resolved = a
        .models
        .iter()
        .map(|m| engine::resolve_model(m))
        .collect::<Result<Vec<_>>>()?;
    let mut models = study::plan_models(&resolved)?;
    for ck in &a.checkpoints {
        study::attach_checkpoint(&mut models, ck)?;
    }
    let precisions = precisions_for(&models, c.precisions.clone(), c.precisions_given)?;
    if (!a.checkpoints.is_empty() || models.iter().any(|m| m.holds.is_some()))
        && c.scheme != Scheme::Mlx
    {
        return Err(Error::Input(
            "MLX folders and --checkpoint belong to --scheme mlx".into(),
        ));
    }
    for m in &models {
        for ck in &m.checkpoints {
            if !precisions.contains(&ck.precision) {
                return Err(Error::Input(format!(
                    "--checkpoint for {} is given but {} is not among the precisions",
                    ck.precision.as_str(),
                    ck.precision.as_str()
                )));
            }
        }
    }
    Ok((resolved, models, precisions))
}

/// The plan's line on stderr: models, precisions, items, orders, seeds, records, passes.
fn print_plan(p: &Planned, passes: usize, batch_size_given: bool) {
    let spec = &p.spec;
    let n_items = p.sel.items.len();
    let orders = spec.option_orders.len();
    let noise = n_items
        * p.models.len()
        * spec.noise_seeds.len()
        * usize::from(spec.precisions.contains(&Precision::Bf16));
    let order_note = if orders > 1 {
        format!(" × {orders} option orders")
    } else {
        String::new()
    };
    let batch = match batch_size_given || p.device.is_cpu() {
        true => format!("{} prompt(s) per pass", spec.batch_size),
        false => "prompts per pass chosen from free device memory".into(),
    };
    eprintln!(
        "plan: {} model(s) × {} precision(s) × {} item(s){order_note} × {} seed(s) = {} records ({} forward passes) on {}, {batch} (--batch-size), into {}",
        p.models.len(),
        spec.precisions.len(),
        n_items,
        spec.seeds.len(),
        passes * spec.seeds.len() + noise,
        passes,
        p.device_name,
        p.out.display()
    );
}

/// `--dry-run`: items per category and the projected time.
fn dry_run(p: &Planned, passes_per_item: usize) -> Result<()> {
    let mut per_cat: std::collections::BTreeMap<&str, usize> = Default::default();
    for it in &p.sel.items {
        *per_cat.entry(it.category.as_str()).or_default() += 1;
    }
    for (c, n) in per_cat {
        println!("{c}: {n} items");
    }
    println!(
        "{}",
        eta(&p.spec, &p.sel, &p.device, &p.device_name, passes_per_item)?
    );
    Ok(())
}

/// The projected time of a plan: the first model scores a few items at BF16 (load and build
/// timed too), and every model, precision and option order is assumed to go at that speed.
fn eta(
    spec: &StudySpec,
    sel: &bbq::Selection,
    device: &candle_core::Device,
    device_name: &str,
    passes_per_item: usize,
) -> Result<String> {
    let Some(first) = spec.models.first() else {
        return Ok("eta: no model".into());
    };
    let sample = &sel.items[..sel.items.len().min(4)];
    let t0 = std::time::Instant::now();
    let (src, template, letters) =
        study::load_for_scoring(first, spec.protocol.chat_template.as_deref())?;
    let bench = crate::bench::Bench {
        src: &src,
        template: &template,
        letters: &letters,
        scheme: spec.scheme,
        compute: spec.compute,
        part_size: spec.part_size,
        batch_sizes: &[spec.batch_size],
        load_secs: t0.elapsed().as_secs_f64(),
        device,
        cpu_check: 0,
    };
    let rows = bench.measure(sample, &[Precision::Bf16], &spec.seeds)?.rows;
    let Some(row) = rows.first().filter(|r| r.items > 0) else {
        return Ok("eta: nothing to measure".into());
    };
    let per_item = row.secs / row.items as f64;
    let builds = spec.models.len() * spec.precisions.len();
    let total =
        per_item * (sel.items.len() * passes_per_item) as f64 + row.build_secs * builds as f64;
    let secs = std::time::Duration::from_secs(total.round().max(1.0) as u64);
    Ok(format!(
        "eta: about {} on {device_name}, projected from BF16 on {} item(s) ({per_item:.2} s per item, {:.1} s to build BF16); precisions whose answers are mostly continued text (q4 and q3 of small models) ran 2-3x slower per item than BF16 on SmolLM2, and the perplexity stage adds to it",
        humantime::format_duration(secs),
        row.items,
        row.build_secs
    ))
}

/// The prompt from `--system-prompt`, `--user-template` and `--chat-template`, each checked
/// before any model loads.
fn protocol(a: &StudyArgs) -> Result<crate::prompt::Protocol> {
    use crate::prompt::Protocol;
    let mut p = Protocol::default();
    if let Some(s) = &a.system_prompt {
        p.system = (!s.trim().is_empty()).then(|| s.clone());
    }
    if let Some(path) = &a.user_template {
        let text = read_flag_file("--user-template", path)?;
        let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
        Protocol::check_user_template(&text, &format!("--user-template {}", path.display()))?;
        p.user_template = text;
    }
    if let Some(path) = &a.chat_template {
        let text = read_flag_file("--chat-template", path)?;
        check_chat_template(&p, &text, path)?;
        p.chat_template = Some(text);
    }
    Ok(p)
}

fn read_flag_file(flag: &str, path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("{flag} {}: cannot read: {e}", path.display())))
}

/// A chat template must compile and render a probe item with the prompt `p`.
fn check_chat_template(
    p: &crate::prompt::Protocol,
    text: &str,
    path: &std::path::Path,
) -> Result<()> {
    let origin = format!("--chat-template {}", path.display());
    let t = crate::prompt::ChatTemplate::new(text, "<s>", "</s>")
        .map_err(|e| Error::Input(format!("{origin}: {e}")))?;
    let probe = crate::bbq::Item {
        category: "Age".into(),
        example_id: 0,
        context_condition: "ambig".into(),
        question_polarity: "neg".into(),
        context: "A context.".into(),
        question: "A question?".into(),
        answers: ["one".into(), "two".into(), "Can't be determined".into()],
        label: 2,
        biased_index: 0,
        unknown_index: 2,
    };
    p.prompt(&t, &probe)
        .map_err(|e| Error::Input(format!("{origin}: {e}")))?;
    Ok(())
}

/// The precisions to run: an MLX folder given as `--model` runs only the precision it
/// holds (the default when `--precisions` is not given), and every such folder must agree.
fn precisions_for(
    models: &[study::PlannedModel],
    asked: Vec<Precision>,
    explicit: bool,
) -> Result<Vec<Precision>> {
    let Some(held) = models.iter().find_map(|m| m.holds.map(|h| (m, h))) else {
        return Ok(asked);
    };
    let (first, h) = held;
    if let Some(m) = models
        .iter()
        .find(|m| m.holds.is_some_and(|x| x != h) || m.holds.is_none() && models.len() > 1)
    {
        return Err(Error::Input(format!(
            "{} holds {} but {} does not; run quantized MLX folders of one precision together, or attach them to their BF16 source with --checkpoint",
            first.resolved.id,
            h.as_str(),
            m.resolved.id
        )));
    }
    if explicit && asked != [h] {
        return Err(Error::Input(format!(
            "{} holds {} and can only run at {}; to compare precisions pass its BF16 source with --model and this folder with --checkpoint {}={}",
            first.resolved.id,
            h.as_str(),
            h.as_str(),
            h.as_str(),
            first.resolved.id
        )));
    }
    Ok(vec![h])
}

/// Run the job with a progress bar on stderr; the outcome and the measured throughput.
fn run_with_bar(job: study::Study) -> (Result<study::Outcome>, Vec<study::Throughput>) {
    let job = study::Job::start(job);
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:32} [{bar:30}] {pos}/{len} records  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut measured = Vec::new();
    let outcome = job.wait(|ev| match ev {
        Event::Planned { total, done, .. } => {
            bar.set_length(total);
            bar.set_position(done);
            bar.reset_eta();
            if done > 0 {
                eprintln!("resuming: {done} of {total} records already on disk");
            }
        }
        Event::Stage(s) => {
            if bar.is_hidden() {
                eprintln!("{s}");
            }
            bar.set_message(s);
        }
        Event::Progress { records, .. } => bar.inc(records),
        Event::StageDone(study::StageDone::Scored(t)) => measured.push(t),
        Event::StageDone(study::StageDone::BatchSize {
            note: Some(note), ..
        }) => bar.suspend(|| eprintln!("{note}")),
        _ => {}
    });
    bar.finish_and_clear();
    (outcome, measured)
}

fn print_throughput(measured: &[study::Throughput]) {
    for study::Throughput {
        model,
        precision: p,
        items,
        prompt_tokens: tokens,
        computed_tokens: computed,
        secs,
    } in measured
    {
        eprintln!(
            "{model} {}: {items} items in {secs:.1} s, {:.1} items/s, {:.0} prompt tok/s ({:.0} computed tok/s after prefix reuse)",
            p.as_str(),
            *items as f64 / secs,
            *tokens as f64 / secs,
            *computed as f64 / secs
        );
    }
}
