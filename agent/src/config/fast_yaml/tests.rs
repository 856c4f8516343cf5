//! The fast path against serde_yaml: wherever it answers, it must answer
//! what serde_yaml does; and it must answer for the configs people write.

use std::path::Path;

use serde_json::Value;

use super::from_str;
use crate::config::Config;

/// Panics if the fast path's `cfg` for `text` is not serde_yaml's result.
pub fn assert_same_as_serde_yaml(text: &str, cfg: &Config) {
    match serde_yaml::from_str::<Config>(text) {
        Ok(slow) => assert!(
            slow == *cfg,
            "the fast YAML path parsed differently from serde_yaml:\n{text}"
        ),
        Err(e) => panic!("the fast YAML path accepted what serde_yaml refuses ({e}):\n{text}"),
    }
}

/// Parses `text` both ways as `T`; returns whether the fast path answered.
fn agrees<T>(text: &str) -> bool
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Some(fast) = from_str::<T>(text) else {
        return false;
    };
    match serde_yaml::from_str::<T>(text) {
        Ok(slow) => assert_eq!(fast, slow, "{text}"),
        Err(e) => panic!("fast path accepted what serde_yaml refuses ({e}):\n{text}"),
    }
    true
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example configs and the schema example (comments everywhere, blank
/// lines, compact and indented sequences, flow collections, quoted ports)
/// all take the fast path and come out as serde_yaml makes them.
#[test]
fn example_configs_take_the_fast_path() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("src/config/testdata/schema-example.yaml")];
    let examples = root.join("../deploy/examples");
    for e in std::fs::read_dir(&examples).unwrap_or_else(|e| panic!("{e}")) {
        let p = e.unwrap_or_else(|e| panic!("{e}")).path();
        if p.extension().is_some_and(|x| x == "yaml") {
            files.push(p);
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let text = read(&f);
        assert!(
            agrees::<Config>(&text),
            "{}: not on the fast path",
            f.display()
        );
        // Untyped, the addresses might be numbers: only checked if answered.
        agrees::<Value>(&text);
    }
}

/// The control benchmark's document shape.
#[test]
fn a_large_config_takes_the_fast_path() {
    let mut doc =
        crate::config::test_doc("    pools: [{first: 80.80.80.100, last: 80.80.80.105}]\n");
    doc.push_str("    staticMappings:\n");
    for i in 0..500 {
        let port = 10_000 + i;
        doc.push_str(&format!(
            "      - {{protocol: tcp, external: \"80.80.80.100:{port}\", local: \"192.168.100.10:{port}\"}}\n"
        ));
    }
    assert!(agrees::<Config>(&doc), "{doc}");
}

/// Documents on both sides of the subset's edge, each compared as untyped
/// values (every scalar resolved as serde_yaml resolves it when the type
/// leaves it open). `fast` says whether the fast path must answer.
#[test]
fn untyped_values_agree() {
    let cases: &[(&str, bool)] = &[
        ("a: 1\nb: -2\nc: 0\nd: x\n", true),
        ("a: true\nb: False\nc: TRUE\n", true),
        ("a: ~\nb: null\nc:\nd: NULL\n", true),
        ("a: '80'\nb: \"80\"\nc: 80\n", true),
        ("a: 'it''s'\nb: \"q\\\"uote\\\\ \\/ \\n\"\n", true),
        ("a: b # comment\n# comment\nc: d#e\n", true),
        ("a: http://x:80/y\nb: /8\n", true),
        // Might be a number to serde_yaml: left to it when the type is open.
        ("a: 10.0.0.0/8\n", false),
        ("a:\n- 1\n- 2\nb: 3\n", true),
        (
            "a:\n  - x: 1\n    y: 2\n  - {x: 3, y: [4, 5]}\nb: []\nc: {}\n",
            true,
        ),
        ("- - a\n  - b\n- c\n", true),
        ("\"quoted key\": 1\n'k2': 2\n", true),
        ("a: -\n", false),
        ("a: 1.5\n", false),
        ("a: 0x10\n", false),
        ("a: +1\n", false),
        ("a: 010\n", false),
        ("a: .inf\n", false),
        ("a: &x 1\nb: *x\n", false),
        ("a: !!str 1\n", false),
        ("a: |\n  text\n", false),
        ("a: >\n  text\n", false),
        ("a: multi\n  line\n", false),
        ("a: [1,\n  2]\n", false),
        ("a: 1\na: 2\n", false),
        ("---\na: 1\n", false),
        ("a: 1\n---\nb: 2\n", false),
        ("a:\tb\n", false),
        ("a: b\r\n", false),
        ("a: \"\\x41\"\n", false),
        ("a: b: c\n", false),
        ("a: 1\n  b: 2\n", false),
        ("  a: 1\n b: 2\n", false),
        ("? a\n: b\n", false),
        ("a: [b: c]\n", false),
        ("a: {b}\n", false),
        ("a: {\"b\":c}\n", false),
        ("<<: {a: 1}\n", true),
        ("%YAML 1.2\n---\na: 1\n", false),
        ("", false),
        ("# only a comment\n", false),
        ("a: 'unterminated\n", false),
        ("a: [1, 2\n", false),
        ("a: 1 # c\n  # indented comment\nb: 2\n", true),
        ("a: \u{7f}\n", false),
        ("a: é ü 日本\n", true),
        ("a: x\u{2028}y\n", false),
        ("a: x\u{85}y\n", false),
        ("a: [b:?]\n", false),
        ("a: [b:c]\n", true),
        ("a: {b: c:d}\n", true),
    ];
    for (text, fast) in cases {
        assert_eq!(agrees::<Value>(text), *fast, "{text:?}");
    }
    let long_key = format!("{}: 1\n", "k".repeat(1100));
    assert!(!agrees::<Value>(&long_key));
}

/// Typed conversions: a quoted number is no number, a plain one is a
/// string where a string is asked for; an empty value is `None`.
#[test]
fn typed_values_agree() {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct T {
        s: String,
        #[serde(default)]
        n: Option<u16>,
        #[serde(default)]
        i: Option<i32>,
        #[serde(default)]
        b: Option<bool>,
        #[serde(default)]
        v: Vec<String>,
    }
    let cases: &[(&str, bool)] = &[
        ("s: 80\nn: 80\n", true),
        ("s: true\nb: true\n", true),
        ("s: null\nn:\n", true),
        ("s: ~\nn: ~\ni: -5\n", true),
        ("s: x\nv: [1, two, '3', null]\n", true),
        ("s: x\nn: \"80\"\n", false),
        ("s: x\nn: 70000\n", false),
        ("s: x\nn: -1\n", false),
        ("s: x\nb: yes\n", false),
        ("s: x\nb: 'true'\n", false),
        ("s: x\nextra: 1\n", false),
        ("n: 1\n", false),
        ("s:\n  - x\n", false),
        ("s: x\ni: -0\n", false),
        ("s: x\ni: 9223372036854775808\n", false),
    ];
    for (text, fast) in cases {
        assert_eq!(agrees::<T>(text), *fast, "{text:?}");
    }
}

/// Unit enums by name, as in `hook: tc`; anything else is refused.
#[test]
fn enums_agree() {
    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum E {
        Tc,
        AutoDetect,
    }
    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct T {
        e: E,
    }
    assert!(agrees::<T>("e: tc\n"));
    assert!(agrees::<T>("e: \"auto-detect\"\n"));
    assert!(!agrees::<T>("e: xdp\n"));
    assert!(!agrees::<T>("e:\n"));
    assert!(!agrees::<T>("e: {tc: 1}\n"));
}
