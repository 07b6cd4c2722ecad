//! The explorer on its real screen: `TestBackend` snapshots of every screen at 80×24 and
//! 160×48, style checks on the highlighted cells, pure `update` tests (keys, and the run's
//! events and background results as actions), and the README's key table kept equal to the
//! keymap.
mod common;

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};
use std::path::PathBuf;
use stereoscope::bbq::{self, Item};
use stereoscope::store::view::{self, ItemView};
use stereoscope::store::{Record, StoredRecord};
use stereoscope::tui::app::{Action, App, Effect, Prompt, RunEnd, Screen, update};

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

/// Records with fixed answers: item 0 turns biased at q4, item 1 at q8, the rest stay unbiased.
fn records(items: &[Item]) -> Vec<StoredRecord> {
    let mut out = Vec::new();
    for (n, it) in items.iter().enumerate() {
        for (pi, p) in ["bf16", "q8", "q6", "q4", "q3"].into_iter().enumerate() {
            for seed in 0..5i64 {
                let biased = (n == 0 && pi >= 3 && seed < 3) || (n == 1 && pi >= 1 && seed == 0);
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
    let items = items();
    let recs = records(&items);
    let views = view::build(&items, &recs, None);
    let report = stereoscope::analysis::compute(&recs, &items);
    let mut app = App::new(
        PathBuf::from("results/demo"),
        "demo-model".into(),
        "cpu (2 threads)".into(),
    );
    app.no_color = false;
    update(&mut app, Action::Data(views.clone(), Some(report)));
    (app, views)
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
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

#[test]
fn snapshots_of_every_screen_at_two_sizes() {
    for (w, h) in [(80u16, 24u16), (160, 48)] {
        let (mut a, _) = app();
        update(&mut a, Action::Resize(h));
        insta::assert_snapshot!(format!("list_{w}x{h}"), text(&draw(&a, w, h)));
        update(&mut a, Action::Open);
        insta::assert_snapshot!(format!("detail_{w}x{h}"), text(&draw(&a, w, h)));
        update(&mut a, Action::Back);
        update(&mut a, Action::Summary);
        insta::assert_snapshot!(format!("summary_{w}x{h}"), text(&draw(&a, w, h)));
        update(&mut a, Action::Summary);
        update(&mut a, Action::Help);
        insta::assert_snapshot!(format!("help_{w}x{h}"), text(&draw(&a, w, h)));
        update(&mut a, Action::Back);
        update(&mut a, Action::StartExport);
        insta::assert_snapshot!(format!("export_prompt_{w}x{h}"), text(&draw(&a, w, h)));
    }
}

#[test]
fn the_first_biased_precision_is_highlighted_by_style_and_glyph() {
    let (a, views) = app();
    assert_eq!(views[0].transition_first.as_deref(), Some("q4"));
    assert_eq!(views[1].transition_first.as_deref(), Some("q8"));
    let t = draw(&a, 80, 24);
    let buf = t.backend().buffer();
    let screen = text(&t);
    // Row of item 0 (the first data row): its q4 cell is "B3", underlined, in the biased colour.
    let row = screen
        .lines()
        .position(|l| l.contains("▲q4"))
        .expect("item 0 row") as u16;
    let line: String = screen.lines().nth(row as usize).expect("line").to_string();
    let col = line
        .find("B3")
        .map(|b| line[..b].chars().count())
        .expect("B3 cell") as u16;
    let cell = &buf[(col, row)];
    assert_eq!(cell.symbol(), "B");
    assert!(
        cell.style().add_modifier.contains(Modifier::UNDERLINED),
        "{:?}",
        cell.style()
    );
    assert_eq!(cell.style().fg, Some(Color::Rgb(213, 94, 0)));
    // A non-transition cell is not underlined.
    let bf16 = &buf[(2, row)];
    assert!(!bf16.style().add_modifier.contains(Modifier::UNDERLINED));
}

#[test]
fn no_color_keeps_the_glyphs_and_drops_the_colours() {
    let (mut a, _) = app();
    a.no_color = true;
    let t = draw(&a, 80, 24);
    let buf = t.backend().buffer();
    assert!(text(&t).contains("▲q4"));
    for y in 0..24 {
        for x in 0..80 {
            let fg = buf[(x, y)].style().fg;
            assert!(
                fg.is_none() || fg == Some(Color::Reset),
                "colour at {x},{y}: {fg:?}"
            );
        }
    }
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
    for _ in 0..40 {
        update(&mut a, Action::Backspace);
    }
    for c in "out.csv".chars() {
        update(&mut a, Action::Char(c));
    }
    let fx = update(&mut a, Action::Submit);
    match &fx[..] {
        [Effect::Export(path, items)] => {
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
    assert_eq!(a.prompt, Prompt::Search(String::new()));
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
