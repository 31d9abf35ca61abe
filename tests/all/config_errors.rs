//! Every bad config in tests/config/invalid/*.toml is rejected with exactly the message in the
//! `.err` file beside it. Set GATEHOUSE_BLESS=1 to rewrite the `.err` files after a reviewed change.

use std::path::Path;

#[test]
fn invalid_configs_match_their_golden_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/config/invalid");
    let bless = std::env::var_os("GATEHOUSE_BLESS").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/config/invalid exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 15,
        "expected the full set of bad-config cases"
    );
    let mut failures = Vec::new();
    for case in cases {
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_owned();
        let text = std::fs::read_to_string(&case).expect("read case");
        let actual = match gatehouse::config::load_str(&text, &name) {
            Ok(_) => "(accepted)".to_owned(),
            Err(e) => e.to_string(),
        };
        let golden = case.with_extension("err");
        if bless {
            std::fs::write(&golden, format!("{actual}\n")).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected.trim_end() != actual {
            failures.push(format!(
                "{name}:\n  expected: {}\n  actual:   {actual}",
                expected.trim_end()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "config error messages changed:\n{}",
        failures.join("\n")
    );
}
