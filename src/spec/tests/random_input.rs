//! Random input, seeded so a failure repeats: bytes, and valid workflows with parts cut,
//! repeated, swapped or replaced by extreme values. `parse` may refuse any of them, never
//! panic, and every refusal is one line with a position.

use std::path::Path;

use super::{FULL, WITH_REQUIRES, WITH_RETRY};
use crate::spec::parse;

/// Every duration key the other fixtures leave out.
const WITH_KILL: &str = r#"name = "k"
[kill]
grace = "2s"
critical_max = "1s"
budget = "10s"
[limits]
timeout = "1h"
[[step]]
name = "s"
run = "true"
timeout = "5m"
stall_after = "1m"
"#;

/// Values meant to find the edges: huge numbers, zero, negative, NaN, NUL, long text.
const EXTREMES: &[&str] = &[
    "18446744073709551615",
    "-9223372036854775808",
    "9223372036854775807",
    "1e308",
    "nan",
    "inf",
    "0",
    "-1",
    "\"18446744073709551615s\"",
    "\"10000000years\"",
    "\"99999999999T\"",
    "\"4294967296%\"",
    "\"\\u0000\"",
    "\"\"",
    "[]",
    "{}",
    "\"\u{10FFFF}\u{202E}é\"",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
];

fn mutate(rng: &mut fastrand::Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..rng.usize(1..4) {
        if lines.is_empty() {
            break;
        }
        let i = rng.usize(..lines.len());
        match rng.u8(..6) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let copy = lines[i].clone();
                lines.insert(rng.usize(..=lines.len()), copy);
            }
            2 => {
                let j = rng.usize(..lines.len());
                lines.swap(i, j);
            }
            3 => {
                if let Some((key, _)) = lines[i].split_once(" = ") {
                    lines[i] = format!("{key} = {}", rng.choice(EXTREMES).unwrap());
                }
            }
            4 => {
                let line = &mut lines[i];
                let cut = rng.usize(..=line.len());
                if line.is_char_boundary(cut) {
                    line.truncate(cut);
                }
            }
            _ => {
                let bytes: Vec<u8> = (0..rng.usize(1..8)).map(|_| rng.u8(..)).collect();
                lines[i].push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    lines.join("\n")
}

fn parses_or_refuses_cleanly(text: &str) {
    if let Err(e) = parse(text, Path::new("fuzz.toml")) {
        let message = e.to_string();
        assert!(message.starts_with("fuzz.toml:"), "{message}");
        assert!(
            message.len() < 2000,
            "a refusal quotes too much: {} bytes",
            message.len()
        );
    }
}

#[test]
fn random_bytes_and_mangled_workflows_never_panic_the_parser() {
    let mut rng = fastrand::Rng::with_seed(0x6472_6f76_6572);
    for _ in 0..2000 {
        let bytes: Vec<u8> = (0..rng.usize(0..200)).map(|_| rng.u8(..)).collect();
        parses_or_refuses_cleanly(&String::from_utf8_lossy(&bytes));
    }
    for _ in 0..3000 {
        let base = *rng
            .choice([FULL, WITH_RETRY, WITH_REQUIRES, WITH_KILL].iter())
            .unwrap();
        parses_or_refuses_cleanly(&mutate(&mut rng, base));
    }
}
