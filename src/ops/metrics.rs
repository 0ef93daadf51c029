//! Live metrics (viewer): one unfinished run's latest figures and recent samples
//! (`Metrics`), and the latest figures of every unfinished run (`Top`).

use super::types::check_run_id;
use super::{Caller, Ops, OpsError, Result};
use crate::auth::Role;
use crate::model::MetricsReport;
use crate::model::RunMetrics;
use crate::monitor;

impl Ops {
    /// A run's live metrics and its last five minutes of samples.
    pub fn metrics(&self, caller: &Caller, run: &str) -> Result<MetricsReport> {
        self.authorise(caller, Role::Viewer, "read metrics")?;
        check_run_id(run)?;
        // The engine's word on the state: the monitor forgets an ended run only at its
        // next tick.
        let record = self.engine.run(run)?;
        if !record.state.is_terminal()
            && let Some(report) = self.monitor.report(run, monitor::REPORT_SAMPLES)
        {
            return Ok(report);
        }
        Err(OpsError::InvalidState(format!(
            "run {run} is {}: live metrics exist only while a run is unfinished (and after its first sample)",
            record.state
        )))
    }

    /// The latest metrics of every unfinished run.
    pub fn top(&self, caller: &Caller) -> Result<Vec<RunMetrics>> {
        self.authorise(caller, Role::Viewer, "read metrics")?;
        Ok(self.monitor.all())
    }
}
