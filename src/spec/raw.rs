//! The raw, file-shaped workflow: structs whose field names are the TOML keys, so
//! serde's "unknown field ... expected one of ..." lists exactly the allowed keys, and
//! whose values keep their spans. Required keys are `Option` so validation can report
//! them with its own span and text.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkflow {
    pub(super) name: Option<Spanned<String>>,
    pub(super) workspace: Option<Spanned<String>>,
    pub(super) user: Option<Spanned<String>>,
    pub(super) limits: Option<RawLimits>,
    pub(super) protected: Option<bool>,
    pub(super) kill: Option<RawKill>,
    pub(super) retry: Option<RawRetry>,
    pub(super) requires: Option<RawRequires>,
    pub(super) step: Option<Spanned<Vec<Spanned<RawStep>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) max_attempts: Option<Spanned<i64>>,
    pub(super) initial: Option<Spanned<String>>,
    // serde's f64 also accepts TOML integers, so `factor = 2` works.
    pub(super) factor: Option<Spanned<f64>>,
    pub(super) max: Option<Spanned<String>>,
    pub(super) jitter: Option<Spanned<String>>,
    pub(super) retry_on: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRequires {
    pub(super) commands: Option<Vec<Spanned<String>>>,
    pub(super) files: Option<Vec<Spanned<String>>>,
    pub(super) env: Option<Vec<Spanned<String>>>,
    pub(super) runs: Option<Vec<Spanned<String>>>,
    pub(super) git: Option<Spanned<RawGit>>,
}

/// `git = "clean"` or `git = { clean = true, branch = "main", commit = "abc123" }`.
pub(super) enum RawGit {
    Word(String),
    Table(RawGitTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGitTable {
    pub(super) clean: Option<bool>,
    pub(super) branch: Option<Spanned<String>>,
    pub(super) commit: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawGit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawGit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"clean\" or a table such as { clean = true, branch = \"main\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawGit, E> {
                Ok(RawGit::Word(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawGit, A::Error> {
                RawGitTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawGit::Table)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKill {
    pub(super) grace: Option<Spanned<String>>,
    pub(super) critical_max: Option<Spanned<String>>,
    pub(super) budget: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) memory_max: Option<Spanned<SizeValue>>,
    pub(super) cpu_quota: Option<Spanned<PercentValue>>,
    pub(super) tasks_max: Option<Spanned<i64>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub(super) name: Option<Spanned<String>>,
    pub(super) run: Option<Spanned<RawRun>>,
    pub(super) env: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) critical: Option<bool>,
    pub(super) checkpoint: Option<bool>,
    pub(super) agent: Option<Spanned<String>>,
    pub(super) on_kill: Option<Vec<Spanned<String>>>,
    pub(super) retry: Option<RawRetry>,
    pub(super) requires: Option<RawRequires>,
    pub(super) stall_after: Option<Spanned<String>>,
}

/// `run` is either an argv array or a shell string; a hand-written visitor gives
/// a clearer type error than `#[serde(untagged)]` ("did not match any variant").
pub(super) enum RawRun {
    Argv(Vec<Spanned<String>>),
    Shell(String),
}

impl<'de> Deserialize<'de> for RawRun {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRun;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an argv array of strings or a shell command string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawRun, E> {
                Ok(RawRun::Shell(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRun, A::Error> {
                let mut argv = Vec::new();
                while let Some(arg) = seq.next_element::<Spanned<String>>()? {
                    argv.push(arg);
                }
                Ok(RawRun::Argv(argv))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TOML integer or string, kept raw so validation can report it with its span.
pub(super) enum IntOrStr {
    Int(i64),
    Str(String),
}

fn deserialize_int_or_str<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<IntOrStr, D::Error> {
    struct V(&'static str);
    impl Visitor<'_> for V {
        type Value = IntOrStr;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrStr, E> {
            Ok(IntOrStr::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrStr, E> {
            i64::try_from(v)
                .map(IntOrStr::Int)
                .map_err(|_| E::custom("integer too large"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrStr, E> {
            Ok(IntOrStr::Str(v.to_owned()))
        }
    }
    d.deserialize_any(V(expecting))
}

/// `memory_max`: `"512M"` or a plain integer of bytes.
pub(super) struct SizeValue(pub(super) IntOrStr);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_int_or_str(d, "a size such as \"512M\" or an integer number of bytes")
            .map(SizeValue)
    }
}

/// `cpu_quota`: `"150%"`. Integers are accepted by the parser only to be
/// rejected with a hint, since a bare `150` is ambiguous.
pub(super) struct PercentValue(pub(super) IntOrStr);

impl<'de> Deserialize<'de> for PercentValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_int_or_str(d, "a percentage string such as \"150%\"").map(PercentValue)
    }
}
