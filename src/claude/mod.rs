//! Claude Code (2.1.197) as drover sees it: its `--output-format stream-json` output
//! (`stream`), the arguments that start or resume a session (`session`), and its session
//! transcripts, which a kill can leave with an incomplete tail that
//! `transcript::repair_transcript` cuts off before a `--resume` (`transcript`).

pub mod session;
pub mod stream;
pub mod transcript;
