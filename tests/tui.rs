//! The explorer on its real screen: `TestBackend` snapshots of every screen at 80×24, 120×36
//! and 200×50, checks that no row wraps and no key hint is cut, style checks on the evidence
//! cells, pure `update` tests (keys, and the run's events and background results as actions),
//! and the README's key table kept equal to the keymap.
mod common;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use std::path::PathBuf;
use stereoscope::bbq::{self, Item};
use stereoscope::store::view::{self, ItemView};
use stereoscope::store::{Record, StoredRecord};
use stereoscope::tui::app::{Action, App, Confirm, Effect, Prompt, RunEnd, Screen, update};
use stereoscope::tui::keymap;
use tui_input::InputRequest;

fn items() -> Vec<Item> {
    let all = bbq::read_category_file(
        &common::bbq_dir().join("Religion.jsonl"),
        &Default::default(),
    )
    .expect("reads");
    all.into_iter()
        .filter(|i| i.context_condition == "ambig")
        .take(6)
        .collect()
}

const LADDER: [&str; 5] = ["bf16", "q8", "q6", "q4", "q3"];

/// Records with fixed answers at `precisions`: item 0 turns biased at q4 (three seeds), item 1
/// at q8 (one seed), item 2 is already biased at bf16 (seed 123 at every precision), the rest
/// stay unbiased.
fn records_at(items: &[Item], precisions: &[&str]) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    for (n, it) in items.iter().enumerate() {
        for p in precisions.iter().copied() {
            let pi = LADDER.iter().position(|l| *l == p).expect("precision");
            for seed in 0..5i64 {
                let biased = (n == 0 && pi >= 3 && seed < 3)
                    || (n == 1 && pi >= 1 && seed == 0)
                    || (n == 2 && seed == 1);
                let answer = if biased {
                    it.biased_index
                } else if seed == 4 {
                    it.anti_index()
                } else {
                    it.unknown_index
                };
                let mut prob = [0.1, 0.1, 0.1];
                prob[it.unknown_index as usize] = 0.7 - 0.1 * pi as f64;
                prob[it.biased_index as usize] = 0.1 + 0.1 * pi as f64;
                out.push(StoredRecord {
                    model: "demo".into(),
                    scheme: "gguf".into(),
                    precision: p.into(),
                    rec: Record {
                        category: it.category.clone(),
                        example_id: it.example_id,
                        context_condition: it.context_condition.clone(),
                        question_polarity: it.question_polarity.clone(),
                        seed: [42, 123, 456, 789, 1024][seed as usize],
                        prob,
                        letter_mass: prob.iter().sum(),
                        samp_prob: prob,
                        seed_set: stereoscope::vocab::SeedSet::Study,
                        option_order: "012".into(),
                        sampled_text: ["A", "B", "C"][answer as usize].into(),
                        answer: Some(answer),
                        role: it.role_of(Some(answer)),
                        latency_ms: 1.0,
                    },
                });
            }
        }
    }
    out
}

fn app() -> (App, Vec<ItemView>) {
    app_at(&LADDER)
}

/// The explorer on a run of `precisions`, as its manifest names them.
fn app_at(precisions: &[&str]) -> (App, Vec<ItemView>) {
    let items = items();
    let recs = records_at(&items, precisions);
    let views = view::build(&items, &recs, None);
    let report = stereoscope::analysis::compute(&recs, &items);
    let mut app = App::new(
        PathBuf::from("results/demo"),
        "demo-model".into(),
        "cpu (2 threads)".into(),
    );
    app.no_color = false;
    update(
        &mut app,
        Action::Precisions(precisions.iter().map(|p| p.to_string()).collect()),
    );
    update(
        &mut app,
        Action::Data(views.clone(), Some(Box::new(report))),
    );
    (app, views)
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut app = app.clone();
    update(&mut app, Action::Resize(w, h));
    let app = &app;
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| stereoscope::tui::view::render(f, app))
        .expect("draws");
    t
}

fn text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

const SIZES: [(u16, u16); 3] = [(80, 24), (120, 36), (200, 50)];

/// The line of the screen that shows list row `id` (its id as a whole word after the strip).
fn row_line(screen: &str, v: &ItemView) -> Option<(usize, String)> {
    screen
        .lines()
        .enumerate()
        .find(|(_, l)| {
            l.contains(&v.item.question.chars().take(6).collect::<String>())
                && l.split_whitespace()
                    .any(|w| w == v.item.example_id.to_string())
        })
        .map(|(i, l)| (i, l.to_string()))
}

#[test]
fn snapshots_of_every_screen_at_three_sizes() {
    for (w, h) in SIZES {
        let (mut a, _) = app();
        update(&mut a, Action::Resize(w, h));
        insta::assert_snapshot!(format!("list_{w}x{h}"), text(&draw(&a, w, h)));
        update(&mut a, Action::Open);
        insta::assert_snapshot!(format!("detail_{w}x{h}"), text(&draw(&a, w, h)));
        update(&mut a, Action::Back);
        update(&mut a, Action::Summary);
        insta::assert_snapshot!(format!("summary_{w}x{h}"), text(&draw(&a, w, h)));
        update(&mut a, Action::Summary);
        update(&mut a, Action::Help);
        insta::assert_snapshot!(format!("help_{w}x{h}"), text(&draw(&a, w, h)));
    }
    let (mut a, _) = app();
    update(&mut a, Action::StartExport);
    insta::assert_snapshot!("export_prompt_80x24", text(&draw(&a, 80, 24)));
    // A run of three precisions, sorted, at 80 columns.
    let (mut a, _) = app_at(&["bf16", "q8", "q4"]);
    update(&mut a, Action::CycleSort);
    insta::assert_snapshot!(
        "list_three_precisions_sorted_80x24",
        text(&draw(&a, 80, 24))
    );
    // An unfinished run (items 4 and 5 not yet at q4), opened with --partial.
    let items = items();
    let recs: Vec<StoredRecord> = records_at(&items, &["bf16", "q8", "q4"])
        .into_iter()
        .filter(|r| {
            r.precision != "q4" || items[..4].iter().any(|i| i.example_id == r.rec.example_id)
        })
        .collect();
    let mut a = App::new(
        PathBuf::from("results/demo"),
        "demo-model".into(),
        "no model loaded".into(),
    );
    update(
        &mut a,
        Action::Precisions(vec!["bf16".into(), "q8".into(), "q4".into()]),
    );
    update(
        &mut a,
        Action::Loaded(Box::new(stereoscope::tui::Loaded {
            views: view::build(&items, &recs, None),
            // The report over the items the reader pools.
            report: Some(Box::new(stereoscope::analysis::compute(
                &recs
                    .iter()
                    .filter(|r| items[..4].iter().any(|i| i.example_id == r.rec.example_id))
                    .cloned()
                    .collect::<Vec<_>>(),
                &items[..4],
            ))),
            partial: Some(stereoscope::tui::Partial {
                label: "PARTIAL: 4 of 6 items (those finished at every precision started); unfinished: demo q4 (2 of 3 parts)".into(),
                items: items[..4]
                    .iter()
                    .map(|i| (i.category.clone(), i.example_id))
                    .collect(),
            }),
        })),
    );
    insta::assert_snapshot!("list_partial_80x24", text(&draw(&a, 80, 24)));
    update(&mut a, Action::Summary);
    insta::assert_snapshot!("summary_partial_80x24", text(&draw(&a, 80, 24)));
}

#[test]
fn every_flagged_row_shows_its_evidence_and_no_other_row_looks_flagged() {
    let (a, views) = app();
    assert_eq!(views[0].transition_first.as_deref(), Some("q4"));
    assert_eq!(views[1].transition_first.as_deref(), Some("q8"));
    assert_eq!(views[2].transition_first, None, "biased at bf16");
    for no_color in [false, true] {
        let mut a = a.clone();
        a.no_color = no_color;
        // Select a row without evidence, so the flagged rows are drawn unselected.
        a.selected = 5;
        let t = draw(&a, 120, 36);
        let buf = t.backend().buffer();
        let screen = text(&t);
        for v in &views {
            let (y, line) = row_line(&screen, v).expect("row on screen");
            let y = y as u16;
            let reversed: Vec<u16> = (0..120)
                .filter(|&x| {
                    buf[(x, y)]
                        .style()
                        .add_modifier
                        .contains(Modifier::REVERSED)
                })
                .collect();
            match &v.transition_first {
                _ if a.current() == Some(v) => {}
                Some(p) => {
                    // ▲ then the seeds of that precision, reversed; a B among them.
                    let col = line
                        .find('▲')
                        .map(|b| line[..b].chars().count())
                        .expect("▲");
                    let cell: String = (col..col + 6)
                        .map(|x| buf[(x as u16, y)].symbol().to_string())
                        .collect();
                    assert!(cell.starts_with('▲') && cell.contains('B'), "{p}: {cell}");
                    assert_eq!(reversed.first().copied(), Some(col as u16), "{line}");
                    assert_eq!(reversed.len(), 6, "{line}");
                    assert!(
                        !buf[(col as u16, y)]
                            .style()
                            .add_modifier
                            .contains(Modifier::DIM)
                    );
                }
                None => {
                    assert!(reversed.is_empty(), "unflagged row reversed: {line}");
                    assert!(!line.contains('▲'), "unflagged row marked: {line}");
                }
            }
            // Rows already biased at bf16 are dimmed and take no role colour.
            let dim = buf[(3, y)].style().add_modifier.contains(Modifier::DIM);
            let biased_at_bf16 = v.cells["bf16"].tally.any_biased();
            assert_eq!(dim, biased_at_bf16, "{line}");
            if biased_at_bf16 {
                assert!(line.contains('B'), "the evidence stays readable: {line}");
                for x in 0..40 {
                    assert_ne!(
                        buf[(x, y)].style().fg,
                        Some(Color::Rgb(213, 94, 0)),
                        "{line}"
                    );
                }
            }
        }
        if no_color {
            for y in 0..36 {
                for x in 0..120 {
                    let fg = buf[(x, y)].style().fg;
                    assert!(
                        fg.is_none() || fg == Some(Color::Reset),
                        "colour at {x},{y}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_selected_flagged_row_keeps_its_first_biased_cell_distinct() {
    let (a, views) = app();
    assert_eq!(a.selected, 0);
    let t = draw(&a, 120, 36);
    let buf = t.backend().buffer();
    let (y, line) = row_line(&text(&t), &views[0]).expect("row");
    let col = line
        .find('▲')
        .map(|b| line[..b].chars().count())
        .expect("▲") as u16;
    let y = y as u16;
    // The row is reversed; its first biased cell is not.
    assert!(
        buf[(0, y)]
            .style()
            .add_modifier
            .contains(Modifier::REVERSED)
    );
    assert!(
        !buf[(col + 1, y)]
            .style()
            .add_modifier
            .contains(Modifier::REVERSED)
    );
    assert_eq!(buf[(col + 1, y)].symbol(), "B");
}

#[test]
fn only_the_run_s_precisions_appear() {
    let (mut a, views) = app_at(&["bf16", "q8", "q4"]);
    assert_eq!(a.precisions, vec!["bf16", "q8", "q4"]);
    assert_eq!(a.focus_precision(), "q4", "starts at the run's lowest");
    for (w, h) in SIZES {
        let mut b = a.clone();
        for screen in [
            None,
            Some(Action::Open),
            Some(Action::Summary),
            Some(Action::Help),
        ] {
            if let Some(s) = screen {
                update(&mut b, Action::Back);
                update(&mut b, s);
            }
            let screen = text(&draw(&b, w, h));
            assert!(!screen.contains("q6") && !screen.contains("q3"), "{screen}");
        }
    }
    // t at the chosen precision finds the items that became biased there.
    update(&mut a, Action::ToggleTransitions);
    assert_eq!(a.visible.len(), 2);
    // [ and ] cycle over q8 and q4 only.
    update(&mut a, Action::NextPrecision);
    assert_eq!(a.focus_precision(), "q8");
    update(&mut a, Action::NextPrecision);
    assert_eq!(a.focus_precision(), "q4");
    update(&mut a, Action::PrevPrecision);
    assert_eq!(a.focus_precision(), "q8");
    assert_eq!(a.visible.len(), 1);
    assert_eq!(
        a.current().map(|v| v.item.example_id),
        Some(views[1].item.example_id)
    );
    // A precision planned but not yet scored is pending, not absent.
    let (mut p, _) = app_at(&["bf16", "q8"]);
    update(
        &mut p,
        Action::Precisions(vec!["bf16".into(), "q8".into(), "q4".into()]),
    );
    let screen = text(&draw(&p, 80, 24));
    assert!(screen.contains("q4 pending"), "{screen}");
    assert!(screen.contains(" ···"), "{screen}");
}

#[test]
fn narrow_terminals_keep_the_whole_strip_and_nothing_panics() {
    let (a, views) = app_at(&["bf16", "q8", "q4"]);
    for w in [40u16, 50, 60, 70] {
        let screen = text(&draw(&a, w, 12));
        assert!(screen.contains("   bf16  q8    q4   "), "{w}:\n{screen}");
        // The evidence of both flagged rows, whole.
        let (_, l0) = row_line(&screen, &views[0]).unwrap_or_else(|| panic!("{screen}"));
        assert!(l0.contains("uuuua uuuua▲BBBua"), "{w}: {l0}");
        let (_, l1) = row_line(&screen, &views[1]).unwrap_or_else(|| panic!("{screen}"));
        assert!(l1.contains("uuuua▲Buuua Buuua"), "{w}: {l1}");
    }
    // At 40 columns the category and the sparkline give way to the question; at 70 they fit.
    let narrow = text(&draw(&a, 40, 12));
    assert!(
        !narrow.contains("category") && !narrow.contains("P(b)"),
        "{narrow}"
    );
    let wide = text(&draw(&a, 70, 12));
    assert!(wide.contains("P(b) 1st  category"), "{wide}");
    // The help wraps its texts under their column at 40 columns and scrolls through them.
    let lines = stereoscope::tui::view::help_lines(40);
    let mut rejoined: Vec<(String, String)> = Vec::new();
    for (k, l) in &lines {
        assert!(l.chars().count() <= 40 - 13, "{l}");
        match rejoined.last_mut() {
            Some((_, t)) if k.is_empty() => *t = format!("{t} {l}"),
            _ => rejoined.push((k.clone(), l.clone())),
        }
    }
    assert_eq!(rejoined, keymap::help_rows());
    let mut b = a.clone();
    update(&mut b, Action::Resize(40, 12));
    update(&mut b, Action::Help);
    let mut seen = String::new();
    for _ in 0..lines.len() {
        seen.push_str(&text(&draw(&b, 40, 12)));
        update(&mut b, Action::Down);
    }
    for (_, l) in &lines {
        assert!(
            seen.contains(l.as_str()),
            "help line never shown at 40×12: {l}"
        );
    }
    // Every screen, the help, a prompt and a question draw at tiny sizes without a panic.
    let (mut a, _) = app();
    update(&mut a, Action::RunStarted);
    for (w, h) in [(1, 1), (10, 3), (20, 5), (30, 8), (40, 12)] {
        for screen in [Screen::List, Screen::Detail, Screen::Summary] {
            let mut b = a.clone();
            b.screen = screen;
            draw(&b, w, h);
            b.help = true;
            draw(&b, w, h);
            b.help = false;
            update(&mut b, Action::StartSearch);
            draw(&b, w, h);
            update(&mut b, Action::ForceQuit);
            draw(&b, w, h);
        }
    }
}

/// The lines between the summary's column header and the first blank line (without the
/// last column, the scrollbar's).
fn summary_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .map(|l| {
            l.chars()
                .take(l.chars().count().saturating_sub(1))
                .collect::<String>()
        })
        .skip_while(|l| !l.trim_start().starts_with("prec"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn no_row_wraps_and_no_key_hint_is_cut() {
    let (a, views) = app();
    for (w, h) in SIZES {
        let mut b = a.clone();
        update(&mut b, Action::Resize(w, h));
        // List: each item on one line with its strip, id and the start of its question.
        let screen = text(&draw(&b, w, h));
        for v in &views {
            let (_, line) = row_line(&screen, v).unwrap_or_else(|| panic!("{screen}"));
            assert!(
                line.trim_start().starts_with(['u', 'B', '●', '▲']),
                "{line}"
            );
        }
        // Footer: `? help` first and only whole hints.
        for screen_kind in [Screen::List, Screen::Detail, Screen::Summary] {
            b.screen = screen_kind;
            let screen = text(&draw(&b, w, h));
            let footer = screen
                .lines()
                .last()
                .expect("footer")
                .trim_end()
                .to_string();
            assert!(footer.starts_with("? help"), "{footer}");
            let hints = keymap::hints_now(&b);
            for hint in footer.split("  ") {
                assert!(
                    hints.contains(&hint),
                    "cut or unknown hint {hint:?} in {footer:?}"
                );
            }
            if w >= 120 {
                assert_eq!(footer.split("  ").count(), hints.len(), "{footer}");
            }
        }
        // Summary: one line per precision, each with the precision and a value per column.
        b.screen = Screen::Summary;
        let screen = text(&draw(&b, w, h));
        let rows = summary_rows(&screen);
        assert_eq!(rows.len(), 5, "{screen}");
        let header: String = screen
            .lines()
            .find(|l| l.trim_start().starts_with("prec"))
            .expect("header")
            .chars()
            .take(w as usize - 1)
            .collect();
        let columns = header.split_whitespace().count();
        for (r, p) in rows.iter().zip(LADDER) {
            assert_eq!(r.split_whitespace().next(), Some(p), "{r}");
            assert_eq!(r.split_whitespace().count(), columns, "{header}\n{r}");
        }
        if w < 100 {
            assert!(screen.contains("Hidden at this width"), "{screen}");
        } else {
            assert!(
                header.contains("Δppl") && header.contains("cont"),
                "{header}"
            );
        }
        assert!(
            header.contains("rate-CI") && header.contains("floor"),
            "{header}"
        );
        // Help: every row whole at every size (scrolling when tall).
        b.screen = Screen::List;
        update(&mut b, Action::Help);
        let mut seen = String::new();
        for _ in 0..keymap::help_rows().len() {
            seen.push_str(&text(&draw(&b, w, h)));
            update(&mut b, Action::Down);
        }
        for (k, help) in keymap::help_rows() {
            assert!(seen.contains(&help), "help row cut at {w}x{h}: {k} {help}");
        }
    }
}

#[test]
fn the_help_scrolls_with_its_position_when_taller_than_the_terminal() {
    let (mut a, _) = app();
    let n = keymap::help_rows().len();
    // 80×12: ten of the rows fit.
    update(&mut a, Action::Resize(80, 12));
    update(&mut a, Action::Help);
    let title = |a: &App| {
        text(&draw(a, 80, 12))
            .lines()
            .find(|l| l.contains(" keys "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        title(&a).contains(&format!("lines 1-10 of {n}")),
        "{}",
        title(&a)
    );
    update(&mut a, Action::PageDown);
    assert!(
        title(&a).contains(&format!("lines 11-20 of {n}")),
        "{}",
        title(&a)
    );
    // Past the end it stays at the end, and one step back moves at once.
    for _ in 0..5 {
        update(&mut a, Action::PageDown);
        update(&mut a, Action::Down);
    }
    let last = format!("lines {}-{n} of {n}", n - 9);
    assert!(title(&a).contains(&last), "{}", title(&a));
    let screen = text(&draw(&a, 80, 12));
    let (k, h) = keymap::help_rows().pop().expect("rows");
    assert!(screen.contains(&k) && screen.contains(&h), "{screen}");
    update(&mut a, Action::Up);
    assert!(title(&a).contains(&format!("lines {}-{} of {n}", n - 10, n - 1)));
    update(&mut a, Action::Top);
    assert!(title(&a).contains(&format!("lines 1-10 of {n}")));
    update(&mut a, Action::Bottom);
    assert!(title(&a).contains(&last));
    // A scrollbar on the overlay's right edge: its thumb at the bottom.
    let t = draw(&a, 80, 12);
    let buf = t.backend().buffer();
    assert_eq!(buf[(79, 10)].symbol(), "█", "{}", text(&t));
    assert_eq!(buf[(79, 1)].symbol(), "│", "{}", text(&t));
    // Any other key closes it, and the next opening starts at the top.
    update(&mut a, Action::Summary);
    assert!(!a.help);
    assert_eq!(a.screen, Screen::List);
    update(&mut a, Action::Help);
    assert!(title(&a).contains(&format!("lines 1-10 of {n}")));
    // Where it fits, it does not scroll.
    update(&mut a, Action::Resize(120, 36));
    update(&mut a, Action::Down);
    assert!(text(&draw(&a, 120, 36)).contains("keys (any key closes)"));
}

#[test]
fn the_summary_equals_the_report_without_filters_and_follows_them() {
    let (mut a, _) = app();
    let rows = stereoscope::tui::summary::rows(&a);
    let rep = a.report.clone().expect("report");
    for r in &rows {
        let all = rep
            .rows
            .iter()
            .find(|x| x.category == "ALL" && x.precision == r.precision)
            .expect("ALL row");
        assert_eq!(
            (r.valid, r.biased, r.unknown),
            (all.valid, all.biased, all.unknown)
        );
        if r.precision == "bf16" {
            continue;
        }
        let t = rep
            .transitions
            .iter()
            .find(|t| t.precision == r.precision)
            .expect("transition row");
        assert_eq!(Some(r.unbiased_at_bf16), t.unbiased_at_bf16);
        assert_eq!(Some(r.became_biased), t.became_biased);
        assert_eq!(Some(r.biased_at_bf16), t.biased_at_bf16);
        assert_eq!(Some(r.became_unbiased), t.became_unbiased);
        assert_eq!(r.rate(), t.rate);
        assert_eq!(r.expected, t.expected_rate);
        assert_eq!(r.noise_floor, t.noise_floor);
    }
    assert_eq!(rows[3].became_biased, 2, "items 0 and 1 at q4");
    // Filtered to the items that became biased at q3: every one of them did.
    update(&mut a, Action::ToggleTransitions);
    let rows = stereoscope::tui::summary::rows(&a);
    assert_eq!((rows[4].became_biased, rows[4].unbiased_at_bf16), (2, 2));
    update(&mut a, Action::Summary);
    let screen = text(&draw(&a, 120, 36));
    assert!(
        screen.contains("2 of 6 items (became biased at q3)"),
        "{screen}"
    );
    // It scrolls.
    let top = text(&draw(&a, 80, 24));
    update(&mut a, Action::Bottom);
    let bottom = text(&draw(&a, 80, 24));
    assert_ne!(top, bottom);
    assert!(
        bottom.contains("noise floor (░)") && bottom.contains("│ floor 41.0%"),
        "{bottom}"
    );
}

/// `open --partial`: on a real unfinished folder (a q8 part lost), the list shows every
/// finished record while the summary pools, by the verified reader's rule, only the items
/// finished at every precision started, with `report --partial`'s label and numbers.
#[test]
fn an_unfinished_folder_s_summary_pools_the_common_items_and_says_so() {
    let tmp = common::tempdir("tui-partial");
    let model = tmp.join("tiny.gguf");
    common::write_answering_gguf(&model);
    let out = tmp.join("out");
    let bbq = common::bbq_dir();
    let o = out.to_str().expect("utf8");
    let args = [
        "--batch",
        "--model",
        model.to_str().expect("utf8"),
        "--bbq-dir",
        bbq.to_str().expect("utf8"),
        "--categories",
        "Age,Religion",
        "--limit",
        "6",
        "--part-size",
        "2",
        "--precisions",
        "bf16,q8",
        "--ppl-sequences",
        "0",
        "--out",
        o,
    ];
    let r = common::run(&args, &tmp);
    assert!(r.status.success(), "{}", common::stderr(&r));
    let lost = common::part_files(&out)
        .into_iter()
        .find(|p| {
            let s = p.to_string_lossy();
            s.contains("precision=q8") && s.ends_with("part-00002.parquet")
        })
        .expect("q8's last part");
    std::fs::remove_file(&lost).expect("rm");
    let rep = common::run(&["report", o, "--partial", "--format", "json"], &tmp);
    assert!(rep.status.success(), "{}", common::stderr(&rep));
    let json: serde_json::Value = serde_json::from_str(&common::stdout(&rep)).expect("json");

    let loaded = stereoscope::tui::read(&stereoscope::store::ResultsDir::at(&out)).expect("reads");
    let partial = loaded
        .partial
        .clone()
        .expect("an unfinished folder is partial");
    assert_eq!(json["partial"].as_str(), Some(partial.label.as_str()));
    assert!(
        partial.label.starts_with("PARTIAL: 4 of 6 items"),
        "{}",
        partial.label
    );
    assert_eq!(partial.items.len(), 4);
    // The list: all 6 items; the 2 of the lost part have no q8 cell.
    assert_eq!(loaded.views.len(), 6);
    let without_q8 = loaded
        .views
        .iter()
        .filter(|v| !v.cells.contains_key("q8"))
        .count();
    assert_eq!(without_q8, 2);
    let mut a = App::new(out.clone(), "tiny".into(), "cpu".into());
    update(&mut a, Action::Precisions(vec!["bf16".into(), "q8".into()]));
    update(&mut a, Action::Loaded(Box::new(loaded)));
    assert_eq!(a.visible.len(), 6);
    // The summary's counts are report --partial's.
    let rows = stereoscope::tui::summary::rows(&a);
    for r in &rows {
        let all = json["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|x| x["category"] == "ALL" && x["precision"] == r.precision.as_str())
            .expect("ALL row");
        assert_eq!(
            [r.valid, r.biased, r.unknown],
            [&all["valid"], &all["biased"], &all["unknown"]].map(|v| v.as_u64().expect("count")),
            "{}",
            r.precision
        );
        assert_eq!(r.answers, 4 * 5, "4 items × 5 seeds at {}", r.precision);
    }
    let t = &json["transitions"][0];
    assert_eq!(
        rows[1].unbiased_at_bf16,
        t["unbiased_at_bf16"].as_u64().expect("n")
    );
    assert_eq!(
        rows[1].became_biased,
        t["became_biased"].as_u64().expect("n")
    );
    // Labelled on the screen, at 80 columns too.
    update(&mut a, Action::Summary);
    let screen = text(&draw(&a, 80, 24));
    assert!(
        screen.contains("Per precision over 4 of the 6 shown items, by the rule below"),
        "{screen}"
    );
    assert!(
        screen.contains("PARTIAL: 4 of 6 items (those finished at every"),
        "{screen}"
    );
    let header = text(&draw(&a, 120, 36));
    assert!(
        header.contains("opened folder (no run here): incomplete"),
        "{header}"
    );
    // Leaving says what is unfinished and how to resume.
    let msg = a.exit_message().expect("incomplete");
    assert!(
        msg.contains("is incomplete (unfinished: ") && msg.contains("q8 (2 of 3 parts)"),
        "{msg}"
    );
    assert!(
        msg.contains("To resume: run the same command again with --out"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn list_order_position_search_and_clicks() {
    let (mut a, views) = app();
    update(&mut a, Action::Resize(120, 36));
    update(&mut a, Action::Bottom);
    assert_eq!(a.selected, 5);
    // A new order starts at its top; the sort value is a column; O reverses.
    update(&mut a, Action::CycleSort);
    assert_eq!(a.selected, 0);
    let first = a.current().map(|v| v.item.example_id);
    assert_eq!(
        first,
        Some(views[0].item.example_id),
        "largest Δ P(biased) at q3"
    );
    let screen = text(&draw(&a, 120, 36));
    assert!(
        screen.contains("ΔP(b)↓") && screen.contains("+0.400"),
        "{screen}"
    );
    update(&mut a, Action::ReverseSort);
    assert_eq!(a.selected, 0);
    assert_ne!(a.current().map(|v| v.item.example_id), first);
    assert!(text(&draw(&a, 120, 36)).contains("ΔP(b)↑"));
    update(&mut a, Action::ReverseSort);
    update(&mut a, Action::CycleSort);
    update(&mut a, Action::CycleSort);
    // Position in the list's title.
    update(&mut a, Action::Down);
    assert!(text(&draw(&a, 120, 36)).contains(" 2/6 "));
    // Search: highlighted, with the match count.
    update(&mut a, Action::Top);
    update(&mut a, Action::StartSearch);
    for c in "planted".chars() {
        update(&mut a, Action::Char(c));
    }
    update(&mut a, Action::Submit);
    let hits = views
        .iter()
        .filter(|v| v.item.question.contains("planted"))
        .count();
    assert!(hits >= 2);
    assert_eq!(a.status, format!("match 1/{hits} for “planted”"));
    let sel = a.current().cloned().expect("selected");
    assert!(sel.item.question.contains("planted"));
    update(&mut a, Action::SearchNext);
    assert_eq!(a.status, format!("match 2/{hits} for “planted”"));
    let t = draw(&a, 120, 36);
    let screen = text(&t);
    let (y, line) = row_line(&screen, &views[0]).expect("row");
    let x = line
        .find("planted")
        .map(|b| line[..b].chars().count())
        .expect("word") as u16;
    let st = t.backend().buffer()[(x, y as u16)].style();
    assert!(st.add_modifier.contains(Modifier::UNDERLINED), "{st:?}");
    // The message goes with the next key.
    update(&mut a, Action::Down);
    assert_eq!(a.status, "");
    // A click selects the row under it: the list's rows start on line 6.
    update(&mut a, Action::Top);
    update(&mut a, Action::Click(6 + 3));
    assert_eq!(a.selected, 3);
    update(&mut a, Action::Click(2));
    assert_eq!(a.selected, 3);
}

#[test]
fn q_goes_back_a_screen_and_asks_before_quitting_a_live_run() {
    let (mut a, _) = app();
    update(&mut a, Action::Open);
    assert_eq!(update(&mut a, Action::Quit), vec![]);
    assert_eq!(a.screen, Screen::List);
    update(&mut a, Action::Summary);
    update(&mut a, Action::Quit);
    assert_eq!(a.screen, Screen::List);
    update(&mut a, Action::RunStarted);
    assert_eq!(update(&mut a, Action::Quit), vec![]);
    assert_eq!(a.confirm, Some(Confirm::Quit));
    let screen = text(&draw(&a, 80, 24));
    assert!(screen.contains("Quit and cancel it"), "{screen}");
    update(&mut a, Action::Confirm(false));
    assert!(!a.quit && a.confirm.is_none());
    update(&mut a, Action::Quit);
    assert_eq!(update(&mut a, Action::Confirm(true)), vec![Effect::Quit]);
    assert!(a.quit);
    // Quitting a cancelled run says how to resume it.
    let (mut a, _) = app();
    a.resume_hint = Some("stereoscope --model m --out results/demo".into());
    update(&mut a, Action::RunStarted);
    update(&mut a, Action::CancelRun);
    assert!(text(&draw(&a, 80, 24)).contains("cancelling"));
    update(&mut a, Action::RunEnded(RunEnd::Cancelled));
    assert!(!text(&draw(&a, 80, 24)).contains("cancelling"));
    assert_eq!(update(&mut a, Action::Quit), vec![Effect::Quit]);
    let msg = a.exit_message().expect("incomplete");
    assert!(
        msg.contains("incomplete") && msg.contains("stereoscope --model m --out results/demo"),
        "{msg}"
    );
}

#[test]
fn ctrl_c_quits_as_q_does_on_the_list_and_says_how_to_resume() {
    // No run going: Ctrl-C quits at once, from any screen.
    let (mut a, _) = app();
    update(&mut a, Action::Open);
    assert_eq!(update(&mut a, Action::ForceQuit), vec![Effect::Quit]);
    assert!(a.quit);
    // A live run, on the detail with the export prompt open: asked first, in the footer.
    let (mut a, _) = app();
    a.resume_hint = Some("stereoscope --model m --out results/demo".into());
    update(&mut a, Action::RunStarted);
    update(&mut a, Action::Open);
    update(&mut a, Action::StartExport);
    assert_eq!(update(&mut a, Action::ForceQuit), vec![]);
    assert!(!a.quit);
    assert_eq!(a.confirm, Some(Confirm::Quit));
    let footer = |a: &App, w| {
        text(&draw(a, w, 24))
            .lines()
            .last()
            .unwrap_or("")
            .to_string()
    };
    assert!(
        footer(&a, 80).starts_with("The run is still going. Quit and cancel it"),
        "{}",
        footer(&a, 80)
    );
    assert!(
        footer(&a, 120).contains("y / n (Ctrl-C again: y)"),
        "{}",
        footer(&a, 120)
    );
    // n keeps the run and gives the prompt back.
    update(&mut a, Action::Confirm(false));
    assert!(!a.quit && a.confirm.is_none());
    assert!(matches!(a.prompt, Prompt::Export(_)));
    // A second Ctrl-C quits.
    assert_eq!(update(&mut a, Action::ForceQuit), vec![]);
    assert_eq!(update(&mut a, Action::ForceQuit), vec![Effect::Quit]);
    assert!(a.quit);
    let msg = a.exit_message().expect("the run is incomplete");
    assert!(
        msg.contains("is incomplete")
            && msg.contains("To resume: stereoscope --model m --out results/demo"),
        "{msg}"
    );
    // The help closes for the question; y answers it.
    let (mut a, _) = app();
    update(&mut a, Action::RunStarted);
    update(&mut a, Action::Help);
    update(&mut a, Action::ForceQuit);
    assert!(!a.help);
    assert_eq!(update(&mut a, Action::Confirm(true)), vec![Effect::Quit]);
    // A finished run quits at once and says nothing more.
    let (mut a, _) = app();
    update(&mut a, Action::RunStarted);
    update(&mut a, Action::RunEnded(RunEnd::Finished));
    assert_eq!(update(&mut a, Action::ForceQuit), vec![Effect::Quit]);
    assert_eq!(a.exit_message(), None);
}

#[test]
fn the_detail_names_roles_seeds_position_and_scrolls() {
    let (mut a, views) = app();
    update(&mut a, Action::Resize(80, 24));
    update(&mut a, Action::Mark); // marks item 0, moves to item 1
    update(&mut a, Action::Top);
    update(&mut a, Action::Open);
    let screen = text(&draw(&a, 80, 24));
    let it = &views[0].item;
    let role = |k: u8| match it.role_of(Some(k)) {
        stereoscope::bbq::Role::Biased => "biased",
        stereoscope::bbq::Role::Anti => "anti",
        stereoscope::bbq::Role::Unknown => "unknown",
        stereoscope::bbq::Role::Invalid => "invalid",
    };
    for k in 0..3u8 {
        let head = format!("P({}) {}", (b'A' + k) as char, role(k));
        assert!(screen.contains(&head), "{head}\n{screen}");
    }
    assert!(screen.contains("seeds 42 123 456 789 1024"), "{screen}");
    // Short of room, the sampled texts give way first, the options share lines, then the
    // context is cut (with …, and the answers' title says how to see it all); every option
    // stays whole with its role.
    let short = text(&draw(&a, 80, 17));
    for k in 0..3u8 {
        let option = format!(
            "{}) {} [{}]",
            (b'A' + k) as char,
            it.answers[k as usize],
            role(k)
        );
        assert!(short.contains(&option), "{option}\n{short}");
    }
    let context = short
        .lines()
        .find(|l| l.starts_with("Context: "))
        .expect("context");
    assert!(context.trim_end().ends_with('…'), "{short}");
    assert!(
        short.contains("biased from q4 · Enter: whole item"),
        "{short}"
    );
    assert!(!short.contains("sampled texts"), "{short}");
    let screen = text(&draw(&a, 80, 21));
    for k in 0..3u8 {
        let option = format!(
            "{}) {} [{}]",
            (b'A' + k) as char,
            it.answers[k as usize],
            role(k)
        );
        assert!(screen.contains(&option), "{option}\n{screen}");
    }
    assert!(!screen.contains('…'), "{screen}");
    let tall = text(&draw(&a, 80, 40));
    assert!(!tall.contains('…'), "{tall}");
    assert!(screen.contains("item 1/6 · ● marked"), "{screen}");
    assert!(screen.contains("sampled texts 1-"), "{screen}");
    update(&mut a, Action::PageDown);
    assert!(a.detail_scroll > 0);
    let scrolled = text(&draw(&a, 80, 24));
    assert!(!scrolled.contains("sampled texts 1-"), "{scrolled}");
    update(&mut a, Action::Bottom);
    assert_eq!(a.selected, 5);
    assert_eq!(a.screen, Screen::Detail);
    update(&mut a, Action::Top);
    assert_eq!(a.selected, 0);
}

#[test]
fn export_prompt_is_a_line_editor_outside_the_folder_and_asks_before_overwriting() {
    let (mut a, views) = app();
    update(&mut a, Action::StartExport);
    assert_eq!(a.prompt.text(), "results/demo-items.csv");
    // Home, delete to the end, type: a line editor, not an append-only buffer.
    update(&mut a, Action::Edit(InputRequest::GoToStart));
    update(&mut a, Action::Edit(InputRequest::DeleteTillEnd));
    for c in "out.csv".chars() {
        update(&mut a, Action::Char(c));
    }
    update(&mut a, Action::Edit(InputRequest::GoToPrevChar));
    update(&mut a, Action::Edit(InputRequest::GoToPrevChar));
    update(&mut a, Action::Edit(InputRequest::GoToPrevChar));
    update(&mut a, Action::Edit(InputRequest::GoToPrevChar));
    update(&mut a, Action::Char('2'));
    assert_eq!(a.prompt.text(), "out2.csv");
    let fx = update(&mut a, Action::Submit);
    let [
        Effect::Export {
            path,
            items,
            overwrite: false,
        },
    ] = &fx[..]
    else {
        panic!("{fx:?}")
    };
    assert_eq!(path, &PathBuf::from("out2.csv"));
    assert_eq!(items.len(), views.len());
    // The runner found the file: ask, and write only on yes.
    update(&mut a, Action::ExportExists(path.clone(), items.clone()));
    assert!(text(&draw(&a, 80, 24)).contains("out2.csv exists. Replace it? y / n"));
    assert_eq!(update(&mut a, Action::Confirm(false)), vec![]);
    assert!(a.status.contains("export cancelled"));
    update(&mut a, Action::ExportExists(path.clone(), items.clone()));
    assert_eq!(
        update(&mut a, Action::Confirm(true)),
        vec![Effect::Export {
            path: path.clone(),
            items: items.clone(),
            overwrite: true
        }]
    );
}

#[test]
fn filters_marks_and_export_through_update() {
    let (mut a, views) = app();
    assert_eq!(a.visible.len(), 6);
    update(&mut a, Action::ToggleTransitions); // at q3
    assert_eq!(a.visible.len(), 2);
    update(&mut a, Action::PrevPrecision); // q4: items 0 and 1
    assert_eq!(a.focus_precision(), "q4");
    assert_eq!(a.visible.len(), 2);
    update(&mut a, Action::PrevPrecision); // q6: only item 1
    assert_eq!(a.focus_precision(), "q6");
    assert_eq!(a.visible.len(), 1);
    update(&mut a, Action::NextPrecision);
    update(&mut a, Action::NextPrecision);
    assert_eq!(a.focus_precision(), "q3");
    assert_eq!(a.visible.len(), 2, "selected {}", a.selected);
    update(&mut a, Action::Top);
    update(&mut a, Action::Mark);
    update(&mut a, Action::Mark);
    assert_eq!(a.marked.len(), 2);
    update(&mut a, Action::StartExport);
    assert!(matches!(a.prompt, Prompt::Export(_)));
    update(&mut a, Action::Edit(InputRequest::DeleteLine));
    for c in "out.csv".chars() {
        update(&mut a, Action::Char(c));
    }
    let fx = update(&mut a, Action::Submit);
    match &fx[..] {
        [Effect::Export { path, items, .. }] => {
            assert_eq!(path, &PathBuf::from("out.csv"));
            let ids: Vec<i64> = items.iter().map(|v| v.item.example_id).collect();
            assert_eq!(
                ids,
                vec![views[0].item.example_id, views[1].item.example_id]
            );
        }
        other => panic!("{other:?}"),
    }
    // Search by text and n.
    update(&mut a, Action::ToggleTransitions);
    update(&mut a, Action::StartSearch);
    let needle = views[4].item.context.clone();
    for c in needle.chars() {
        update(&mut a, Action::Char(c));
    }
    update(&mut a, Action::Submit);
    let found = a.current().map(|v| v.item.example_id);
    assert!(a.current().is_some_and(|v| v.item.context == needle));
    // n moves to the next item with that text (the other polarity of the same context), if any.
    update(&mut a, Action::SearchNext);
    assert!(a.current().is_some_and(|v| v.item.context == needle));
    let twins = views.iter().filter(|v| v.item.context == needle).count();
    assert_eq!(a.current().map(|v| v.item.example_id) != found, twins > 1);
    // Sorting by Δ P(biased) keeps all items.
    update(&mut a, Action::CycleSort);
    assert_eq!(a.visible.len(), 6);
    // Detail and back; quit.
    update(&mut a, Action::Open);
    assert_eq!(a.screen, Screen::Detail);
    update(&mut a, Action::Back);
    assert_eq!(update(&mut a, Action::Quit), vec![Effect::Quit]);
}

#[test]
fn the_run_s_events_drive_progress_through_update() {
    let (mut a, _) = app();
    let t0 = std::time::Instant::now();
    update(&mut a, Action::RunStarted);
    let p = a.progress.clone().expect("progress");
    assert!(p.running && !p.finished);
    assert_eq!(p.stage, "starting");
    update(
        &mut a,
        Action::Planned {
            total: 100,
            done: 20,
            per_precision: vec![("bf16".into(), 50, 20), ("q4".into(), 50, 0)],
            at: t0,
        },
    );
    update(&mut a, Action::Stage("tiny q4: scoring".into()));
    update(
        &mut a,
        Action::Advanced {
            precision: "q4".into(),
            records: 10,
            at: t0 + std::time::Duration::from_secs(2),
        },
    );
    let p = a.progress.clone().expect("progress");
    assert_eq!((p.total, p.done), (100, 30));
    assert_eq!(p.per_precision[1], ("q4".to_string(), 50, 10));
    assert_eq!(p.stage, "tiny q4: scoring");
    // 10 new records in 2 s; the 20 done before the run do not count.
    assert!((p.records_per_s - 5.0).abs() < 1e-9, "{}", p.records_per_s);
    // Cancel while running, then resume.
    assert_eq!(update(&mut a, Action::CancelRun), vec![Effect::CancelRun]);
    assert!(a.progress.as_ref().expect("progress").cancelling);
    assert_eq!(
        update(&mut a, Action::RunEnded(RunEnd::Cancelled)),
        vec![Effect::Reload]
    );
    assert!(!a.progress.as_ref().expect("progress").running);
    assert_eq!(update(&mut a, Action::ResumeRun), vec![Effect::ResumeRun]);
    update(&mut a, Action::RunStarted);
    update(&mut a, Action::Data(Vec::new(), None));
    // A failure is shown; a finished run writes its report and reads the folder again.
    update(&mut a, Action::RunEnded(RunEnd::Failed("disk full".into())));
    let p = a.progress.clone().expect("progress");
    assert_eq!(p.error.as_deref(), Some("disk full"));
    update(&mut a, Action::LoadFailed("gone".into()));
    assert_eq!(a.status, "cannot read results: gone");
    update(&mut a, Action::RunStarted);
    assert_eq!(a.progress.as_ref().and_then(|p| p.error.clone()), None);
    assert_eq!(
        update(&mut a, Action::RunEnded(RunEnd::Finished)),
        vec![Effect::WriteReport, Effect::Reload]
    );
    let p = a.progress.clone().expect("progress");
    assert!(p.finished && !p.running);
    assert_eq!(p.stage, "finished");
    assert_eq!(update(&mut a, Action::ResumeRun), vec![]);
    assert_eq!(a.status, "the run is finished: nothing to resume");
}

#[test]
fn reloads_are_coalesced_one_in_flight_one_queued() {
    let (mut a, views) = app();
    assert_eq!(update(&mut a, Action::Reload), vec![Effect::Reload]);
    // Parts written while the reload runs queue one more, not one each.
    assert_eq!(update(&mut a, Action::Reload), vec![]);
    assert_eq!(update(&mut a, Action::Reload), vec![]);
    assert_eq!(
        update(&mut a, Action::Data(views.clone(), None)),
        vec![Effect::Reload]
    );
    assert_eq!(update(&mut a, Action::Data(views.clone(), None)), vec![]);
    assert_eq!(update(&mut a, Action::Reload), vec![Effect::Reload]);
    assert_eq!(update(&mut a, Action::LoadFailed("x".into())), vec![]);
    assert!(!a.loading);
}

#[test]
fn background_actions_apply_while_a_prompt_or_the_help_is_open() {
    let (mut a, views) = app();
    update(&mut a, Action::StartSearch);
    update(&mut a, Action::Stage("loading".into()));
    update(&mut a, Action::Data(views[..2].to_vec(), None));
    assert_eq!(a.views.len(), 2);
    assert_eq!(a.prompt, Prompt::Search(Default::default()));
    assert_eq!(
        a.progress.as_ref().map(|p| p.stage.as_str()),
        Some("loading")
    );
    update(&mut a, Action::Escape);
    update(&mut a, Action::Help);
    update(&mut a, Action::Status("report: written".into()));
    assert!(a.help);
    assert_eq!(a.status, "report: written");
    // The model's name replaces only the placeholder of a run that is starting.
    update(&mut a, Action::Model("other".into()));
    assert_eq!(a.model, "demo-model");
    let mut s = App::new(PathBuf::from("r"), "starting".into(), "cpu".into());
    update(&mut s, Action::Model("tiny · scheme gguf".into()));
    assert_eq!(s.model, "tiny · scheme gguf");
}

#[test]
fn readme_key_table_is_generated_from_the_keymap() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .expect("README");
    let table = stereoscope::tui::keymap::readme_table();
    assert!(
        readme.contains(&table),
        "README's key table differs from the keymap; it should read:\n{table}"
    );
}

/// The context as the screen shows it: its lines from `Context: ` to the question, rejoined.
fn shown_context(screen: &str) -> String {
    screen
        .lines()
        .skip_while(|l| !l.starts_with("Context: "))
        .take_while(|l| !l.starts_with("Question: "))
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether every precision's row of the answers shows, with its five seeds' letters.
fn answers_shown(screen: &str, a: &App, v: &ItemView) -> bool {
    a.precisions.iter().all(|p| {
        let letters: Vec<char> = v.cells[p]
            .seeds
            .iter()
            .map(|r| r.answer.map_or('?', |k| (b'A' + k) as char))
            .collect();
        screen.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words
                .first()
                .is_some_and(|w| w.trim_start_matches('▲') == p)
                && words.iter().filter(|w| w.len() == 1).count() == letters.len()
                && words
                    .iter()
                    .filter(|w| w.len() == 1)
                    .zip(&letters)
                    .all(|(w, c)| w.starts_with(*c))
        })
    })
}

#[test]
fn the_detail_keeps_the_context_and_the_answers_on_small_terminals() {
    for precisions in [&["bf16", "q8", "q4"][..], &LADDER[..]] {
        let (mut a, views) = app_at(precisions);
        update(&mut a, Action::Open);
        let v = &views[0];
        let context = format!("Context: {}", v.item.context);
        // The whole context, the question, every option and every precision's answers.
        for (w, h) in [(80, 18), (80, 24), (60, 20)] {
            let screen = text(&draw(&a, w, h));
            assert_eq!(shown_context(&screen), context, "{w}x{h}\n{screen}");
            assert!(screen.contains(&v.item.question), "{screen}");
            assert!(
                screen.contains("[biased]") && screen.contains("[anti]"),
                "{screen}"
            );
            assert!(answers_shown(&screen, &a, v), "{w}x{h}\n{screen}");
            assert!(screen.contains("biased from q4"), "{screen}");
        }
        // At 40×12 the detail is one page that starts with the answers and says where it is;
        // PgDn reaches the whole context.
        let mut b = a.clone();
        update(&mut b, Action::Resize(40, 12));
        let screen = text(&draw(&b, 40, 12));
        assert!(answers_shown(&screen, &b, v), "{screen}");
        assert!(
            screen.contains("P(C) biased")
                || screen.contains("P(A) biased")
                || screen.contains("P(B) biased"),
            "{screen}"
        );
        assert!(screen.contains("Religion 0 · lines 1-6/"), "{screen}");
        let mut seen = String::new();
        for _ in 0..20 {
            update(&mut b, Action::PageDown);
            seen.push_str(&text(&draw(&b, 40, 12)));
        }
        for word in v.item.context.split_whitespace() {
            assert!(seen.contains(word), "{word} never shown at 40x12");
        }
        // Past the first page the keys are still named.
        let later = text(&draw(&b, 40, 12));
        let hint = later.lines().rev().nth(1).unwrap_or_default();
        assert!(hint.contains("/") && hint.contains("PgUp/PgDn"), "{later}");
        assert!(seen.contains("sampled texts"), "{seen}");
        // Enter turns the split view into the page and back.
        update(&mut a, Action::Open);
        assert!(a.detail_page && a.screen == Screen::Detail);
        let page = text(&draw(&a, 80, 24));
        assert!(page.contains("Enter: split view"), "{page}");
        assert!(answers_shown(&page, &a, v), "{page}");
        update(&mut a, Action::Open);
        assert!(!a.detail_page);
        assert!(!text(&draw(&a, 80, 24)).contains("Enter: split view"));
    }
    let (mut a, _) = app();
    update(&mut a, Action::Open);
    for (w, h) in [(80, 18), (60, 20), (40, 12)] {
        insta::assert_snapshot!(format!("detail_{w}x{h}"), text(&draw(&a, w, h)));
    }
    update(&mut a, Action::Open);
    insta::assert_snapshot!("detail_page_80x24", text(&draw(&a, 80, 24)));
}

/// The footer of the app as drawn at `w`×`h` (its last line, trimmed).
fn footer_at(a: &App, w: u16, h: u16) -> String {
    text(&draw(a, w, h))
        .lines()
        .last()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

#[test]
fn the_detail_footer_names_the_view_enter_switches_to() {
    let (mut a, _) = app_at(&["bf16", "q8", "q4"]);
    update(&mut a, Action::Resize(80, 24));
    update(&mut a, Action::Open);
    // The split view: Enter shows the page.
    let foot = footer_at(&a, 80, 24);
    assert!(foot.contains("Enter page"), "{foot}");
    assert!(!foot.contains("Enter split"), "{foot}");
    // The page: Enter goes back to the split view.
    update(&mut a, Action::Open);
    assert!(a.detail_page);
    let foot = footer_at(&a, 80, 24);
    assert!(foot.contains("Enter split"), "{foot}");
    assert!(!foot.contains("Enter page"), "{foot}");
    update(&mut a, Action::Open);
    assert!(!a.detail_page);
    // At 40×12 the page is all there is: no Enter hint, Enter changes nothing, and the
    // page's last line does not offer a split view.
    let mut b = a.clone();
    update(&mut b, Action::Resize(40, 12));
    let screen = text(&draw(&b, 40, 12));
    let foot = screen.lines().last().unwrap_or_default();
    assert!(
        foot.starts_with("? help") && !foot.contains("Enter"),
        "{screen}"
    );
    assert!(!screen.contains("Enter: split view"), "{screen}");
    update(&mut b, Action::Open);
    assert!(!b.detail_page && b.screen == Screen::Detail);
    assert_eq!(text(&draw(&b, 40, 12)), screen);
    // The page chosen at 80×24 and then shrunk to 40×12 does not offer the split view either.
    update(&mut a, Action::Open);
    update(&mut a, Action::Resize(40, 12));
    let screen = text(&draw(&a, 40, 12));
    assert!(!screen.contains("Enter"), "{screen}");
}

#[test]
fn the_glyph_legend_fits_at_40_columns() {
    for precisions in [&["bf16", "q8", "q4"][..], &LADDER[..]] {
        let (a, _) = app_at(precisions);
        let screen = text(&draw(&a, 40, 12));
        let title = screen
            .lines()
            .find(|l| l.ends_with(" 1/6 "))
            .unwrap_or_else(|| panic!("{screen}"));
        assert!(title.starts_with(" B bias"), "{title}");
        for word in ["a anti", "u unk", "▲1st"] {
            assert!(title.contains(word), "{word}: {title}");
        }
    }
}

#[test]
fn the_summary_s_chart_titles_wrap_at_40_columns() {
    let (mut a, _) = app_at(&["bf16", "q8", "q4"]);
    update(&mut a, Action::Resize(40, 12));
    update(&mut a, Action::Summary);
    // Scrolled through, every word of both chart titles is on the screen, none cut.
    let mut seen = String::new();
    for _ in 0..80 {
        seen.push_str(&text(&draw(&a, 40, 12)));
        update(&mut a, Action::Down);
    }
    for title in [
        "SRS by precision (█ rate, ├─┤ 95% interval)",
        "Became biased (█ rate, ├─┤ 95% interval) against its noise floor (░)",
    ] {
        for word in title.split_whitespace() {
            let whole = seen
                .lines()
                .any(|l| l.split_whitespace().any(|w| w == word));
            assert!(whole, "{word:?} of {title:?} never whole at 40x12:\n{seen}");
        }
    }
}

#[test]
fn at_40_columns_the_strip_stays_whole_sorted_or_with_five_precisions() {
    // Sorted: the sort value gives way (the header still names the order), the strip does not.
    let (mut a, views) = app_at(&["bf16", "q8", "q4"]);
    update(&mut a, Action::CycleSort);
    let screen = text(&draw(&a, 40, 12));
    // The header line in short words: shown/all, the chosen precision, the order, marks.
    assert!(screen.contains("6/6 · at q4 · ΔP↓ · 0 marked"), "{screen}");
    assert!(!screen.contains("ΔP(b)"), "{screen}");
    let (_, l0) = row_line(&screen, &views[0]).unwrap_or_else(|| panic!("{screen}"));
    assert!(l0.contains("uuuua uuuua▲BBBua"), "{l0}");
    // At 70 columns the sort value is a column again.
    let wide = text(&draw(&a, 70, 12));
    assert!(wide.contains("ΔP(b)↓"), "{wide}");
    assert!(
        wide.contains("6/6 items · at q4 · sort Δ P(biased) ↓"),
        "{wide}"
    );
    // Five precisions: the whole strip and the id; the per-precision progress as ✓ marks.
    let (a, views) = app();
    let screen = text(&draw(&a, 40, 12));
    assert!(screen.contains("bf16 ✓ q8 ✓ q6 ✓ q4 ✓ q3◆✓"), "{screen}");
    assert!(
        screen.contains("   bf16  q8    q6    q4    q3    id"),
        "{screen}"
    );
    let line = screen
        .lines()
        .find(|l| l.contains("▲BBBua BBBua"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(
        line.split_whitespace()
            .any(|w| w == views[0].item.example_id.to_string()),
        "{line}"
    );
    insta::assert_snapshot!("list_five_precisions_40x12", screen);
    // An unfinished precision shows its share; one without records, 0%.
    let (mut b, _) = app_at(&["bf16", "q8", "q4"]);
    let mut half = b.views.clone();
    for v in half.iter_mut().skip(3) {
        v.cells.remove("q8");
    }
    for v in half.iter_mut() {
        v.cells.remove("q4");
    }
    update(&mut b, Action::Data(half, None));
    let screen = text(&draw(&b, 40, 12));
    assert!(screen.contains("bf16 ✓ q8 50% q4◆0%"), "{screen}");
}

#[test]
fn narrow_column_headers_and_help_titles_are_whole_words() {
    let (mut a, _) = app_at(&["bf16", "q8", "q4"]);
    // 60 columns: the category column is 6 wide and its header a whole word.
    let screen = text(&draw(&a, 60, 20));
    let header = screen
        .lines()
        .find(|l| l.trim_start().starts_with("bf16  q8"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(header.split_whitespace().any(|w| w == "cat"), "{header}");
    assert!(!header.contains("catego"), "{header}");
    // The help's title, scrolling, fits its box at every width.
    update(&mut a, Action::Help);
    for (w, h) in [(40, 12), (60, 20), (80, 12)] {
        let screen = text(&draw(&a, w, h));
        let top = screen.lines().find(|l| l.contains("help")).unwrap_or("");
        assert!(
            top.starts_with("┌ help ") && top.ends_with('┐'),
            "{w}x{h}: {top}"
        );
        let title = top.trim_start_matches("┌").trim_end_matches(['─', '┐']);
        let n = stereoscope::tui::view::help_lines(w).len();
        assert!(title.contains(&format!(" of {n}")), "{w}x{h}: {top}");
        // It ends as one of its forms ends, not cut inside one.
        assert!(
            ["other keys close ", "↑↓ scroll "]
                .iter()
                .any(|end| title.ends_with(end))
                || title.ends_with(&format!(" of {n} ")),
            "{w}x{h}: {top}"
        );
    }
}

#[test]
fn a_long_message_wraps_above_the_footer_instead_of_being_cut() {
    let (mut a, _) = app();
    update(&mut a, Action::Resize(80, 24));
    let message = "export refused: results/demo/items.csv is inside the results folder results/demo, \
                   whose files the explorer and report read; choose a path outside it, such as \
                   results/demo-items.csv beside the folder";
    a.status = message.into();
    let mut t = Terminal::new(TestBackend::new(80, 24)).expect("terminal");
    t.draw(|f| stereoscope::tui::view::render(f, &a))
        .expect("draws");
    let screen = text(&t);
    let bottom: Vec<&str> = screen.lines().rev().take(4).collect();
    let shown = bottom
        .iter()
        .rev()
        .flat_map(|l| l.split_whitespace())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(shown.ends_with(message), "the whole message:\n{screen}");
    // Short messages stay on the footer line alone.
    a.status = "copied Age:12".into();
    t.draw(|f| stereoscope::tui::view::render(f, &a))
        .expect("draws");
    let screen = text(&t);
    let last = screen.lines().last().expect("a footer");
    assert!(last.starts_with("copied Age:12"), "{screen}");
    assert!(
        !screen
            .lines()
            .rev()
            .nth(1)
            .expect("a row")
            .contains("copied")
    );
}
