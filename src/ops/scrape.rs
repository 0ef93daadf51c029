//! What the HTTP listener shows anyone who can reach it (`/metrics`, `/healthz`): every run
//! and the latest sample of each unfinished one. It takes no caller: nothing here changes a
//! run, and the listener is on loopback unless the operator configures otherwise.

use super::{Ops, Result};
use crate::model::{Run, RunMetrics};

pub struct Scrape {
    pub runs: Vec<Run>,
    pub live: Vec<RunMetrics>,
}

/// What `/healthz` reports: every run, and what keeps the agent from recording them
/// (empty: healthy).
pub struct Health {
    pub runs: Vec<Run>,
    pub problems: Vec<String>,
}

impl Ops {
    pub fn scrape(&self) -> Result<Scrape> {
        Ok(Scrape {
            runs: self.engine.runs()?,
            live: self.monitor.all(),
        })
    }

    pub fn health(&self) -> Result<Health> {
        Ok(Health {
            runs: self.engine.runs()?,
            problems: self.engine.storage_problems(),
        })
    }
}
