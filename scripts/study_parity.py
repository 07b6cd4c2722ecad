#!/usr/bin/env python3
"""Compare `stereoscope report --format json` with the study's own analysis code on the same
records.

The study's code is plawanrath/compression-bias-amplification ("Quantization Undoes
Alignment", Rath & Maliakkal, 2026). This script imports its analysis functions from a
checkout given on the command line (nothing of it is kept here), converts a stereoscope
results folder into the records its inference script writes (one JSON object per answer:
model, quant, item_id, category, seed, raw_response, parsed_answer,
stereotype_target_index, anti_stereotype_target_index, unknown_index), runs

- src/response_parser.py `parse_response` on every record's `sampled_text`,
- scripts/02_prepare_dataset.py `_extract_answer_info` on every item of the study's condition
  (the unknown option it finds),
- src/metrics.py `compute_metrics`, `add_deltas_from_baseline`, `compute_per_item_srs`,
  `filter_items_by_baseline_srs`,
- scripts/05_analyze.py `generate_statistical_tests_csv` (chi-squared with Yates, p,
  Cohen's h and its label), `generate_main_results_csv` (the model-level SRS and delta),
  `compute_transition_analysis`, `generate_perplexity_vs_bias_table` (the perplexity change
  against BF16, when the folder has perplexity.parquet), and src/stats.py
  `logistic_regression_trend`,
- the same tables over the study's latent-bias filter (its config.yaml band),

and compares every number both compute, printing one line per number. The study's tables
round for display (`round(x, 4)`, `DataFrame.round(4)`); that rounding is turned off while its
functions run, so the comparison is of the unrounded values. Counts must be equal, other
numbers within 1e-9, absolute or relative. Only study seeds in the study's
option order (012) are converted, as the report's own tables use.

Usage: study_parity.py RESULTS_DIR STUDY_CHECKOUT [--stereoscope BINARY] [--latent-band LOW,HIGH]
Needs pandas, numpy, scipy, statsmodels, matplotlib, seaborn, pyyaml and datasets (the study's
requirements, less mlx-lm). Exits 1 when any number differs, 2 on bad input.
"""
import argparse
import contextlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq

BITS = {"bf16": 16, "q8": 8, "q6": 6, "q4": 4, "q3": 3}
PRECISION = {b: p for p, b in BITS.items()}
LETTERS = "ABC"
TOL = 1e-9


class Table:
    """The comparison: one line per number, and the record-level checks as counts."""

    def __init__(self):
        self.lines = []
        self.records = []  # (what, compared, matched, first mismatches)

    def add(self, what, ours, theirs, exact=False, note=""):
        """One number; `note` explains a difference (printed only beside one)."""
        missing = [_missing(ours), _missing(theirs)]
        if all(missing):
            return
        if any(missing):
            ok, diff = False, None
        elif isinstance(ours, str) or isinstance(theirs, str):
            ok, diff = ours == theirs, None
        else:
            diff = abs(float(ours) - float(theirs))
            ok = diff == 0 if exact else diff <= TOL or diff <= TOL * abs(float(theirs))
        self.lines.append((what, ours, theirs, diff, ok, "" if ok else note))

    def add_records(self, what, pairs):
        bad = [(key, o, t) for key, o, t in pairs if o != t]
        self.records.append((what, len(pairs), len(pairs) - len(bad), bad[:10]))

    def print(self):
        width = max(len(w) for w, *_ in self.lines) if self.lines else 10
        print(f"{'quantity':<{width}}  {'ours':>22}  {'theirs':>22}  {'|diff|':>9}  match")
        for what, ours, theirs, diff, ok, note in self.lines:
            d = "" if diff is None else f"{diff:.1e}"
            print(f"{what:<{width}}  {_fmt(ours):>22}  {_fmt(theirs):>22}  {d:>9}  {'yes' if ok else 'NO'}"
                  + (f"  ({note})" if note else ""))
        print()
        for what, n, matched, bad in self.records:
            print(f"{what}: {matched}/{n} records agree")
            for key, o, t in bad:
                print(f"  {key}: ours {o!r}, theirs {t!r}")
        ok = sum(1 for line in self.lines if line[4])
        print(f"\nnumbers compared: {len(self.lines)}, matched: {ok}, differing: {len(self.lines) - ok}")
        return ok == len(self.lines) and all(n == m for _, n, m, _ in self.records)


def fail(message):
    print(f"study_parity: {message}", file=sys.stderr)
    sys.exit(2)


def _missing(x):
    return x is None or (isinstance(x, float) and math.isnan(x))


def _fmt(x):
    if _missing(x):
        return "null"
    if isinstance(x, float):
        return f"{x:.15g}"
    return str(x)


def load_study(root):
    """The study's modules, imported from its checkout (its scripts put the checkout first on
    sys.path themselves, so `src` is the study's package)."""
    for f in ["src/metrics.py", "src/stats.py", "src/response_parser.py", "scripts/05_analyze.py",
              "scripts/02_prepare_dataset.py", "config.yaml"]:
        if not (root / f).is_file():
            fail(f"{root} is not a checkout of the study's code: {f} is missing")
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.path.insert(0, str(root))
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        del sys.modules[name]

    def load(name, rel):
        spec = importlib.util.spec_from_file_location(name, root / rel)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    import yaml
    import src.metrics
    import src.response_parser
    import src.stats
    return types.SimpleNamespace(
        analyze=load("study_analyze", "scripts/05_analyze.py"),
        prepare=load("study_prepare", "scripts/02_prepare_dataset.py"),
        metrics=src.metrics, stats=src.stats, parse=src.response_parser.parse_response,
        config=yaml.safe_load((root / "config.yaml").read_text()))


@contextlib.contextmanager
def unrounded(*modules):
    """Run the study's table functions without their display rounding: the builtin `round`
    shadowed in their modules and `DataFrame.round` made the identity."""
    saved = pd.DataFrame.round
    for m in modules:
        m.round = lambda x, ndigits=None: x
    pd.DataFrame.round = lambda self, *a, **k: self
    try:
        yield
    finally:
        pd.DataFrame.round = saved
        for m in modules:
            del m.round


def read_folder(folder):
    """Study-seed records in the study's option order, with the items' roles."""
    for f in ["items.parquet", "records"]:
        if not (folder / f).exists():
            fail(f"{folder / f} does not exist: not a stereoscope results folder")
    rec = ds.dataset(str(folder / "records"), partitioning="hive").to_table().to_pandas()
    rec = rec[(rec.seed_set == "study") & (rec.option_order == "012")]
    items = pq.read_table(folder / "items.parquet").to_pandas()
    rec = rec.merge(items[["category", "example_id", "biased_index", "unknown_index"]],
                    on=["category", "example_id"], how="left", validate="many_to_one")
    if rec.biased_index.isna().any():
        fail("some records have no item in items.parquet")
    return rec, items


def study_key(model, scheme):
    return f"{model} [{scheme}]"


def to_study(rec, parse):
    """The records as the study's inference script writes them (scripts/03_run_inference.py),
    with `parsed_answer` from the study's parser."""
    out = pd.DataFrame({
        "model": [study_key(m, s) for m, s in zip(rec.model, rec.scheme)],
        "quant": rec.precision.map(BITS).astype(int),
        "item_id": rec.example_id.astype(int),
        "category": rec.category,
        "seed": rec.seed.astype(int),
        "raw_response": rec.sampled_text,
        "parsed_answer": [parse(t) for t in rec.sampled_text],
        "stereotype_target_index": rec.biased_index.astype(int),
        "anti_stereotype_target_index": 3 - rec.biased_index.astype(int) - rec.unknown_index.astype(int),
        "unknown_index": rec.unknown_index.astype(int),
    })
    # The study's JSONL has null for an unparsed answer.
    out["parsed_answer"] = out.parsed_answer.astype(object).where(out.parsed_answer.notna(), None)
    return out.reset_index(drop=True)


def check_records(table, rec, df, items, study):
    """The parser on every record, the role the study's rule gives, and the unknown option the
    study's dataset step finds in every item."""
    ours = [None if _missing(a) else LETTERS[int(a)] for a in rec.answer]
    keys = [f"{m}/{p}/{c}:{e}/seed {s}" for m, p, c, e, s in
            zip(rec.model, rec.precision, rec.category, rec.example_id, rec.seed)]
    table.add_records("parsed answer (study's parse_response on sampled_text)",
                      list(zip(keys, ours, df.parsed_answer)))

    def role(parsed, b, u):
        if parsed is None:
            return "invalid"
        return "biased" if parsed == LETTERS[b] else "unknown" if parsed == LETTERS[u] else "anti"

    theirs = [role(p, b, u) for p, b, u in zip(df.parsed_answer, df.stereotype_target_index, df.unknown_index)]
    table.add_records("role (the study's rule: parsed == stereotype / unknown letter)",
                      list(zip(keys, rec.role, theirs)))
    # The study prepares items of one condition (config.yaml, `ambig`): where no option
    # carries one of its "unknown" phrases it falls back to the label, which is the unknown
    # option only in ambiguous contexts.
    condition = study.config["dataset"]["condition"]
    pairs = []
    for it in items[items.context_condition == condition].itertuples():
        info = study.prepare._extract_answer_info(
            {"ans0": it.ans0, "ans1": it.ans1, "ans2": it.ans2, "label": int(it.label)})
        pairs.append((f"{it.category}:{it.example_id}", int(it.unknown_index), info["unknown_index"]))
    table.add_records(f"item's unknown option (study's _extract_answer_info, {condition} items)", pairs)


def check_rows(table, tag, rows, metrics, deltas, tests, main):
    """compute_metrics, deltas, the statistical-tests table and the model-level table against
    the report's rows (category rows; ALL rows for the model-level SRS)."""
    keys = {study_key(r["model"], r["scheme"]): (r["model"], r["scheme"]) for r in rows}
    by = {(r["model"], r["scheme"], r["precision"], r["category"]): r for r in rows}
    delta = {(d.model, d.quant, d.category): d.srs_delta for d in deltas.itertuples()}
    for m in metrics.itertuples():
        model, scheme = keys[m.model]
        prec = PRECISION[m.quant]
        r = by.get((model, scheme, prec, m.category))
        k = f"{tag}{prec} {m.category}"
        if r is None:
            table.add(f"{k} row", None, "present")
            continue
        table.add(f"{k} n", r["n"], int(m.n), exact=True)
        table.add(f"{k} valid", r["valid"], int(m.n_valid), exact=True)
        for ours, theirs in [("parse_fail_rate", "parse_fail_rate"), ("srs", "srs"), ("srs_ci_low", "srs_ci_low"),
                             ("srs_ci_high", "srs_ci_high"), ("usr", "usr"), ("anti_rate", "anti_rate")]:
            table.add(f"{k} {ours}", r[ours], getattr(m, theirs))
        if prec != "bf16":
            table.add(f"{k} delta_srs", r["delta_srs"], delta.get((m.model, m.quant, m.category)))
    for t in tests.itertuples():
        model, scheme = keys[t.model]
        prec = PRECISION[int(t.comparison.split("Q")[-1])]
        r = by[(model, scheme, prec, t.category)]
        note = truncation_note(r, by[(model, scheme, "bf16", t.category)])
        k = f"{tag}{prec} {t.category}"
        table.add(f"{k} chi2 (Yates)", r["chi2"], t.chi2, note=note)
        table.add(f"{k} chi2_p", r["chi2_p"], t.p_value, note=note)
        table.add(f"{k} cohens_h", r["cohens_h"], t.cohens_h)
        table.add(f"{k} effect", r["effect"], t.effect_size)
    for model_key, row in main.iterrows():
        model, scheme = keys[model_key]
        for q, prec in PRECISION.items():
            r = by.get((model, scheme, prec, "ALL"))
            if r is None or f"Q{q}_SRS" not in row:
                continue
            table.add(f"{tag}{prec} ALL srs_macro (model-level SRS)", r["srs_macro"], row[f"Q{q}_SRS"])
            if prec != "bf16":
                table.add(f"{tag}{prec} ALL delta_srs_macro", r["delta_srs_macro"], row[f"Q{q}_delta"])


def truncation_note(row, base):
    """The study's chi_squared_test rebuilds each biased count as int(srs * n_valid), which
    truncates to one less than the count when the product rounds just below it."""
    notes = []
    for r in [row, base]:
        if r["valid"] and int(r["srs"] * r["valid"]) != r["biased"]:
            notes.append(f"{r['precision']}: study's int(srs*n) = {int(r['srs'] * r['valid'])}, "
                         f"biased = {r['biased']}")
    return "; ".join(notes)


def study_tables(study, df, tmp, name):
    """The study's metrics, deltas, statistical tests and model-level table for `df`."""
    metrics = study.metrics.compute_metrics(df).sort_values(
        ["model", "category", "quant"], ascending=[True, True, False], ignore_index=True)
    deltas = study.metrics.add_deltas_from_baseline(metrics)
    with unrounded(study.analyze):
        tests = study.analyze.generate_statistical_tests_csv(metrics, tmp / f"{name}_tests.csv")
        main = study.analyze.generate_main_results_csv(deltas, tmp / f"{name}_main.csv")
    return metrics, deltas, tests, main


def check_regression(table, rep, df, study):
    """logistic_regression_trend on each model's valid answers (the study's script fits all its
    models' answers together; with one model per fit the two are the same model)."""
    for reg in rep["regressions"]:
        fit = reg.get("fit")
        valid = df[(df.model == study_key(reg["model"], reg["scheme"])) & df.parsed_answer.notna()]
        if fit is None or valid.empty:
            table.add(f"regression {reg['model']} fit", fit and "fit", None if valid.empty else "fit")
            continue
        summary = study.stats.logistic_regression_trend(valid)
        params = summary.tables[1]
        info = summary.tables[0]
        cells = [str(c).strip() for row in info.itertuples(index=False) for c in row]
        n_obs = int(cells[cells.index("No. Observations:") + 1])
        table.add("regression n", reg["n"], n_obs, exact=True)
        for i, name in enumerate(fit["names"]):
            theirs = "quant" if name == "bits" else name.replace("category[", "category_").rstrip("]")
            if theirs not in params.index:
                table.add(f"regression {name} coef", fit["coef"][i], None)
                continue
            p = params.loc[theirs]
            table.add(f"regression {name} coef", fit["coef"][i], p["Coef."])
            table.add(f"regression {name} se", fit["se"][i], p["Std.Err."])
            table.add(f"regression {name} p", fit["p"][i], p["P>|z|"])


def check_transitions(table, rep, df, item_srs, study):
    """compute_transition_analysis (its percentages unrounded) against the transition rows."""
    with unrounded(study.analyze):
        tr = study.analyze.compute_transition_analysis(df, item_srs)
    tr = tr.sort_values(["model", "quant"], ascending=[True, False], ignore_index=True)
    by = {(study_key(t["model"], t["scheme"]), t["precision"]): t for t in rep["transitions"]}
    for row in tr.itertuples():
        prec = PRECISION[row.quant]
        t = by.get((row.model, prec))
        if t is None:
            table.add(f"transitions {prec} row", None, "present")
            continue
        k = f"transitions {prec}"
        table.add(f"{k} unbiased_at_bf16", t["unbiased_at_bf16"], int(row.n_unbiased_at_bf16), exact=True)
        table.add(f"{k} became_biased", t["became_biased"], int(row.n_became_biased), exact=True)
        table.add(f"{k} rate", t["rate"], row.pct_became_biased / 100)
        table.add(f"{k} mean_item_srs", t["mean_item_srs"], row.mean_srs)
    return tr


def check_perplexity(table, rep, transitions, study, tmp):
    """generate_perplexity_vs_bias_table's perplexity change against BF16 (the perplexities
    themselves are stereoscope's, from perplexity.parquet; the study measures them with its own
    script)."""
    ppl = [{"model": study_key(p["model"], p["scheme"]), "quant": BITS[p["precision"]],
            "perplexity": p["perplexity"]} for p in rep["perplexity"]]
    if not ppl:
        return
    with unrounded(study.analyze):
        out = study.analyze.generate_perplexity_vs_bias_table(ppl, transitions, tmp / "ppl.csv")
    by = {(study_key(p["model"], p["scheme"]), p["precision"]): p for p in rep["perplexity"]}
    for row in out.itertuples():
        prec = PRECISION[row.quant]
        if prec != "bf16":
            table.add(f"perplexity {prec} delta_ppl_pct", by[(row.model, prec)]["delta_ppl_pct"],
                      row.ppl_change_pct)


def check_latent(table, latent, df, item_srs, study, tmp):
    """filter_items_by_baseline_srs and the tables over the kept items against `latent`."""
    lo, hi = latent["min_srs"], latent["max_srs"]
    filtered, summary = study.metrics.filter_items_by_baseline_srs(df, item_srs, min_srs=lo, max_srs=hi)
    by = {(study_key(c["model"], c["scheme"]), c["category"]): c for c in latent["counts"]}
    for s in summary.itertuples():
        c = by.get((s.model, s.category), {})
        k = f"latent {s.category}"
        table.add(f"{k} total_items", c.get("total_items"), int(s.total_items), exact=True)
        table.add(f"{k} filtered_items", c.get("filtered_items"), int(s.filtered_items), exact=True)
        table.add(f"{k} mean_baseline_srs", c.get("mean_baseline_srs"), s.mean_baseline_srs)
    if not filtered.empty:
        check_rows(table, "latent ", latent["rows"], *study_tables(study, filtered, tmp, "latent"))


def report_json(binary, folder, band):
    cmd = [binary, "report", str(folder), "--format", "json", "--latent-band", band]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        fail(f"cannot run {binary}: {e}")
    if done.returncode != 0:
        fail(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a stereoscope results folder")
    ap.add_argument("study", type=Path, help="a checkout of plawanrath/compression-bias-amplification")
    ap.add_argument("--stereoscope", default=os.environ.get("STEREOSCOPE", "stereoscope"),
                    help="the stereoscope binary (default: $STEREOSCOPE or stereoscope on PATH)")
    ap.add_argument("--latent-band", help="LOW,HIGH (default: the study's config.yaml baseline_filter)")
    args = ap.parse_args()
    study = load_study(args.study.resolve())
    band = args.latent_band or "{min_srs},{max_srs}".format(**study.config["baseline_filter"])
    rec, items = read_folder(args.results)
    df = to_study(rec, study.parse)
    rep = report_json(args.stereoscope, args.results, band)
    print(f"{len(df)} records ({df.model.nunique()} model(s), {df.quant.nunique()} precision(s), "
          f"{df.category.nunique()} categories); latent band {band}\n")
    table = Table()
    check_records(table, rec, df, items, study)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        check_rows(table, "", rep["rows"], *study_tables(study, df, tmp, "all"))
        check_regression(table, rep, df, study)
        item_srs = study.metrics.compute_per_item_srs(df, quant_level=16)
        transitions = check_transitions(table, rep, df, item_srs, study)
        check_perplexity(table, rep, transitions, study, tmp)
        if rep.get("latent"):
            check_latent(table, rep["latent"], df, item_srs, study, tmp)
    sys.exit(0 if table.print() else 1)


if __name__ == "__main__":
    main()
