//! What the history reports read: the runs created since a time, their agents' costs, the
//! kills and restarts done since then, and the durations and failures the rules compare a
//! run with. The store returns the rows; the arithmetic (days, quantiles) is
//! the `history` module's (above the store) and the rules'.

use rusqlite::params;

use super::{Result, StoreReader};
use crate::model::Timestamp;

/// A run as the history counts it: when it was created, started and ended, how it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CreatedRun {
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// The state as stored (`succeeded`, `failed`, …).
    pub state: String,
    pub failure_class: Option<String>,
}

impl StoreReader {
    /// The runs created at `since` or later, of `workflow` or of every workflow.
    pub fn runs_created_since(
        &self,
        workflow: Option<&str>,
        since: Timestamp,
    ) -> Result<Vec<CreatedRun>> {
        self.query_all(
            "SELECT created_at, started_at, ended_at, state, failure_class FROM runs
             WHERE created_at >= ?1 AND (?2 IS NULL OR workflow = ?2)",
            params![since.0, workflow],
            |r| {
                Ok(CreatedRun {
                    created_at: Timestamp(r.get(0)?),
                    started_at: r.get::<_, Option<i64>>(1)?.map(Timestamp),
                    ended_at: r.get::<_, Option<i64>>(2)?.map(Timestamp),
                    state: r.get(3)?,
                    failure_class: r.get(4)?,
                })
            },
        )
    }

    /// What Claude Code reported as each attempt's cost (`total_cost_usd` of its `result`
    /// event), with the creation time of the attempt's run, for the runs created at
    /// `since` or later. `agent_json` is drover's own JSON, but a damaged value is skipped
    /// rather than failing the whole report.
    pub fn agent_costs_since(
        &self,
        workflow: Option<&str>,
        since: Timestamp,
    ) -> Result<Vec<(Timestamp, f64)>> {
        let costs: Vec<(i64, Option<f64>)> = self.query_all(
            "SELECT r.created_at,
                    json_extract(a.agent_json, '$.result.total_cost_usd')
             FROM step_attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.created_at >= ?1 AND (?2 IS NULL OR r.workflow = ?2)
               AND a.agent_json IS NOT NULL AND json_valid(a.agent_json)",
            params![since.0, workflow],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(costs
            .into_iter()
            .filter_map(|(created, cost)| Some((Timestamp(created), cost?)))
            .collect())
    }

    /// When each kill carried out (killed, failed, or seen from outside; not refusals) at
    /// `since` or later was requested.
    pub fn kills_done_since(
        &self,
        workflow: Option<&str>,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>> {
        self.query_all(
            "SELECT k.requested_at FROM kills k JOIN runs r ON r.id = k.run_id
             WHERE k.requested_at >= ?1 AND (?2 IS NULL OR r.workflow = ?2)
               AND k.result IN ('killed', 'failed', 'external')",
            params![since.0, workflow],
            |r| Ok(Timestamp(r.get(0)?)),
        )
    }

    /// When each restart done (not refused or failed) at `since` or later happened.
    pub fn restarts_done_since(
        &self,
        workflow: Option<&str>,
        since: Timestamp,
    ) -> Result<Vec<Timestamp>> {
        self.query_all(
            "SELECT x.at FROM actions x JOIN runs r ON r.id = x.run_id
             WHERE x.at >= ?1 AND (?2 IS NULL OR r.workflow = ?2)
               AND x.action = 'restart' AND x.result = 'done'",
            params![since.0, workflow],
            |r| Ok(Timestamp(r.get(0)?)),
        )
    }

    /// Seconds each successful attempt of step `step` took in runs of `workflow` other
    /// than `except`, newest first, at most `limit` of them.
    pub fn step_durations(
        &self,
        workflow: &str,
        step: &str,
        except: &str,
        limit: u32,
    ) -> Result<Vec<f64>> {
        let millis: Vec<i64> = self.query_all(
            "SELECT a.ended_at - a.started_at FROM step_attempts a JOIN runs r ON r.id = a.run_id
             WHERE r.workflow = ?1 AND a.name = ?2 AND a.run_id != ?3 AND a.state = 'succeeded'
               AND a.started_at IS NOT NULL AND a.ended_at IS NOT NULL
             ORDER BY a.ended_at DESC LIMIT ?4",
            params![workflow, step, except, limit],
            |r| r.get(0),
        )?;
        Ok(millis
            .into_iter()
            .map(|ms| ms.max(0) as f64 / 1000.0)
            .collect())
    }

    /// How many runs of `workflow` ended failed at or after `since`.
    pub fn failed_runs_since(&self, workflow: &str, since: Timestamp) -> Result<u64> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM runs WHERE workflow = ?1 AND state = 'failed' AND ended_at >= ?2",
            params![workflow, since.0],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }
}
