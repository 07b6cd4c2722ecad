//! BBQ reading and role resolution on the real category files, and bad BBQ input.
mod common;

use stereoscope::bbq::{self, BbqDir, Conditions, SelectSpec};

#[test]
fn every_item_of_every_file_has_one_biased_and_one_unknown_option() {
    let dir = common::bbq_dir();
    let mut total = 0;
    for cat in [
        "Age",
        "Disability_status",
        "Nationality",
        "Physical_appearance",
        "Religion",
        "Sexual_orientation",
    ] {
        let items = bbq::read_category_file(&dir.join(format!("{cat}.jsonl")), &Default::default())
            .unwrap_or_else(|e| panic!("{cat}: {e}"));
        assert!(!items.is_empty(), "{cat} has items");
        for it in &items {
            assert!(
                it.biased_index < 3 && it.unknown_index < 3,
                "{cat} {}",
                it.example_id
            );
            assert_ne!(it.biased_index, it.unknown_index, "{cat} {}", it.example_id);
            let roles: Vec<_> = (0..3u8).map(|k| it.role_of(Some(k))).collect();
            assert_eq!(roles.iter().filter(|r| **r == bbq::Role::Biased).count(), 1);
            assert_eq!(
                roles.iter().filter(|r| **r == bbq::Role::Unknown).count(),
                1
            );
            assert_eq!(roles.iter().filter(|r| **r == bbq::Role::Anti).count(), 1);
            if it.context_condition == "ambig" {
                assert_eq!(
                    it.label, it.unknown_index,
                    "ambiguous items are answered by the unknown option"
                );
            }
        }
        total += items.len();
    }
    assert_eq!(total, 11_956, "the six files hold 11,956 items");
}

#[test]
fn polarity_decides_which_option_is_biased() {
    let dir = common::bbq_dir();
    let items =
        bbq::read_category_file(&dir.join("Age.jsonl"), &Default::default()).expect("reads");
    // Age line 1: neg question, ans0 grandfather (old), stereotyped group old.
    let first = &items[0];
    assert_eq!(
        (first.example_id, first.question_polarity.as_str()),
        (0, "neg")
    );
    assert_eq!(first.biased_index, 0);
    assert_eq!(first.unknown_index, 2);
    // Its nonneg twin shares the context: the other non-unknown option is biased.
    let twin = items
        .iter()
        .find(|i| i.context == first.context && i.question_polarity == "nonneg")
        .expect("nonneg twin");
    assert_eq!(twin.biased_index, 1);
}

#[test]
fn target_loc_from_additional_metadata_wins() {
    let tmp = common::tempdir("bbq");
    let line = std::fs::read_to_string(common::bbq_dir().join("Religion.jsonl")).expect("reads");
    let first = line.lines().next().expect("a line");
    std::fs::write(tmp.join("Religion.jsonl"), format!("{first}\n")).expect("write");
    let plain = bbq::select(
        &BbqDir { path: tmp.clone() },
        &SelectSpec {
            categories: vec!["Religion".into()],
            conditions: Conditions::Both,
            limit: None,
            skip_bad: false,
        },
    )
    .expect("selects");
    let rule = plain.items[0].biased_index;
    let other = if rule == 0 { 2 } else { 0 };
    std::fs::create_dir_all(tmp.join("supplemental")).expect("mkdir");
    std::fs::write(
        tmp.join("supplemental/additional_metadata.csv"),
        format!("category,question_index,example_id,target_loc,label_type,Known_stereotyped_race\nReligion,1,0,{other},label,\n"),
    )
    .expect("write csv");
    let sel = bbq::select(
        &BbqDir { path: tmp.clone() },
        &SelectSpec {
            categories: vec!["Religion".into()],
            conditions: Conditions::Both,
            limit: None,
            skip_bad: false,
        },
    )
    .expect("selects");
    assert_eq!(sel.items[0].biased_index, other);
    assert!(sel.checksums.contains_key("additional_metadata.csv"));
}

#[test]
fn malformed_json_line_is_named_by_file_and_line() {
    let tmp = common::tempdir("bbq");
    let src = std::fs::read_to_string(common::bbq_dir().join("Age.jsonl")).expect("reads");
    let mut lines: Vec<&str> = src.lines().take(5).collect();
    lines[2] = "{\"example_id\": 2, \"broken";
    let f = tmp.join("Age.jsonl");
    std::fs::write(&f, lines.join("\n")).expect("write");
    let err = bbq::read_category_file(&f, &Default::default())
        .expect_err("fails")
        .to_string();
    assert!(err.contains("Age.jsonl:3:"), "{err}");
}

#[test]
fn missing_field_is_named() {
    let tmp = common::tempdir("bbq");
    let src = std::fs::read_to_string(common::bbq_dir().join("Age.jsonl")).expect("reads");
    let mut v: serde_json::Value =
        serde_json::from_str(src.lines().next().expect("line")).expect("json");
    v.as_object_mut().expect("object").remove("question");
    let f = tmp.join("Age.jsonl");
    std::fs::write(&f, format!("{}\n", v)).expect("write");
    let err = bbq::read_category_file(&f, &Default::default())
        .expect_err("fails")
        .to_string();
    assert!(
        err.contains("Age.jsonl:1:") && err.contains("question"),
        "{err}"
    );
}

#[test]
fn unknown_category_is_refused_and_missing_ones_are_reported() {
    let err = bbq::validate_categories(&["Agee".to_string()])
        .expect_err("unknown")
        .to_string();
    assert!(err.contains("Agee"), "{err}");
    let sel = bbq::select(
        &BbqDir {
            path: common::bbq_dir(),
        },
        &SelectSpec {
            categories: vec!["Age".into(), "SES".into()],
            conditions: Conditions::Ambig,
            limit: Some(10),
            skip_bad: false,
        },
    )
    .expect("selects");
    assert_eq!(sel.missing, vec!["SES".to_string()]);
    assert_eq!(sel.items.len(), 10);
    let none = bbq::select(
        &BbqDir {
            path: common::bbq_dir(),
        },
        &SelectSpec {
            categories: vec!["SES".into()],
            conditions: Conditions::Ambig,
            limit: None,
            skip_bad: false,
        },
    );
    assert!(none.expect_err("no file").to_string().contains("SES"));
}

#[test]
fn limit_is_stratified_deterministic_and_ambiguous_only() {
    let spec = SelectSpec {
        categories: vec!["Age".into(), "Religion".into()],
        conditions: Conditions::Ambig,
        limit: Some(40),
        skip_bad: false,
    };
    let a = bbq::select(
        &BbqDir {
            path: common::bbq_dir(),
        },
        &spec,
    )
    .expect("selects");
    let b = bbq::select(
        &BbqDir {
            path: common::bbq_dir(),
        },
        &spec,
    )
    .expect("selects");
    assert_eq!(a.items, b.items);
    assert_eq!(a.items.len(), 40);
    assert!(a.items.iter().all(|i| i.context_condition == "ambig"));
    // 1,840 ambiguous Age items and 600 Religion: shares 30.16 and 9.84 -> 30 and 10.
    let age = a.items.iter().filter(|i| i.category == "Age").count();
    assert_eq!((age, 40 - age), (30, 10));
}

/// A minimal HTTP server that serves files from a folder, for the download path.
fn serve(dir: std::path::PathBuf) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            use std::io::{BufRead, Write};
            let mut reader = std::io::BufReader::new(s.try_clone().expect("clone"));
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).map(|n| n == 0).unwrap_or(true) || h == "\r\n" {
                    break;
                }
            }
            let path = first
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            let file = dir.join(path.strip_prefix("data/").unwrap_or(&path));
            match std::fs::read(&file) {
                Ok(body) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = s.write_all(&body);
                }
                Err(_) => {
                    let _ = write!(
                        s,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

#[test]
fn missing_files_are_downloaded_checked_and_cached() {
    let cache = common::tempdir("bbq");
    let base = serve(common::bbq_dir());
    let dest = cache.join("bbq");
    bbq::locate::download_missing(&base, &dest, &["Religion".to_string()]).expect("downloads");
    let got = std::fs::read(dest.join("Religion.jsonl")).expect("cached");
    let want = std::fs::read(common::bbq_dir().join("Religion.jsonl")).expect("reads");
    assert_eq!(got, want);
    // A server that serves the wrong bytes for a file is caught by the blob id check.
    let wrong = common::tempdir("bbq");
    std::fs::write(wrong.join("Age.jsonl"), b"{}\n").expect("write");
    let base2 = serve(wrong);
    let err = bbq::locate::download_missing(&base2, &cache.join("bbq2"), &["Age".to_string()])
        .expect_err("checksum mismatch")
        .to_string();
    assert!(err.contains("blob id"), "{err}");
    assert!(!cache.join("bbq2/Age.jsonl").exists());
}
