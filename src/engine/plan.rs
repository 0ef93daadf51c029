//! The pure planner: what a run needs next (start, await or retry a step, or finish the
//! run), decided from its workflow and the attempts the state DB holds, and the facts each
//! action starts from (the session to resume, the time left). No I/O (the time left reads
//! the clock, nothing else): the driver loop (`engine::drive`) acts on what it decides.

use std::time::Duration;

use crate::model::FailureClass;
use crate::model::{Run, RunState, StepAttempt, StepState, Timestamp};
use crate::recovery;
use crate::spec::Workflow;

/// What a run needs next, decided from its workflow and the attempts the DB holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    Start {
        index: usize,
        attempt: u32,
    },
    Await {
        index: usize,
        attempt: u32,
    },
    /// Attempt `attempt` of a failed step, as retry number `retry`, after the backoff.
    Retry {
        index: usize,
        attempt: u32,
        retry: u32,
    },
    Finish {
        state: RunState,
        reason: Option<String>,
        failure: Option<FailureClass>,
    },
}

/// The result an attempt gets when its shim saw the start gate close unopened: the step
/// never ran, so it is started again as a new attempt.
pub(super) const NEVER_STARTED: &str = "never-started";

/// The first step not done decides: started if it has no attempt (since the restart, if
/// any), awaited while its attempt runs, retried or ending the run as failed once it
/// failed; the run succeeds when every step is done.
pub(super) fn next_action(workflow: &Workflow, run: &Run) -> Action {
    for (index, step) in workflow.steps.iter().enumerate() {
        let restart = run.restart.as_ref();
        if restart.is_some_and(|r| (index as u32) < r.next_step) {
            continue; // done by the checkpoint the run was restarted from
        }
        let first = first_attempt(run, index);
        let Some(attempt) = run
            .steps
            .iter()
            .find(|a| a.index as usize == index && a.attempt >= first)
        else {
            return Action::Start {
                index,
                attempt: first,
            };
        };
        match attempt.state {
            StepState::Succeeded => continue,
            StepState::Failed if attempt.result.as_deref() == Some(NEVER_STARTED) => {
                return Action::Start {
                    index,
                    attempt: attempt.attempt + 1,
                };
            }
            StepState::Failed | StepState::Killed => {
                let so_far = attempt.attempt + 1 - first;
                if let Some(retry) = recovery::retry_number(step, attempt.failure_class, so_far) {
                    return Action::Retry {
                        index,
                        attempt: attempt.attempt + 1,
                        retry,
                    };
                }
                let how = match (attempt.failure_class, &attempt.failure_evidence) {
                    (Some(class), Some(evidence)) => format!("{class}: {evidence}"),
                    _ => attempt.result.clone().unwrap_or_else(|| "failed".into()),
                };
                return Action::Finish {
                    state: RunState::Failed,
                    reason: Some(format!("step {} failed: {how}", step.name)),
                    failure: attempt.failure_class,
                };
            }
            StepState::Pending | StepState::Starting | StepState::Running => {
                return Action::Await {
                    index,
                    attempt: attempt.attempt,
                };
            }
        }
    }
    Action::Finish {
        state: RunState::Succeeded,
        reason: None,
        failure: None,
    }
}

/// The Claude Code session an attempt continues: for the first attempt after a restart,
/// the one the checkpoint recorded; for a later attempt, its step's previous one.
pub(super) fn session_to_resume(run: &Run, index: usize, attempt: u32) -> Option<String> {
    if attempt == first_attempt(run, index) {
        return run.restart.as_ref()?.sessions.get(&(index as u32)).cloned();
    }
    run.steps
        .iter()
        .find(|a: &&StepAttempt| a.index as usize == index)
        .and_then(|a| a.session_id.clone())
}

/// The number of step `index`'s first attempt since the run's latest restart (1 if it
/// never was).
fn first_attempt(run: &Run, index: usize) -> u32 {
    run.restart
        .as_ref()
        .and_then(|r| r.first_attempts.get(index).copied())
        .unwrap_or(1)
}

/// What remains of the workflow's time limit (`None` once it has run out); unlimited
/// workflows get `Some(Duration::MAX)`.
pub(super) fn time_left(workflow: &Workflow, run: &Run) -> Option<Duration> {
    let Some(limit) = workflow.limits.timeout else {
        return Some(Duration::MAX);
    };
    // A restart gives the run its whole time limit again.
    let started = current_go_began(run);
    let elapsed = Duration::from_millis((Timestamp::now().0 - started.0).max(0) as u64);
    limit.checked_sub(elapsed).filter(|left| !left.is_zero())
}

/// When the run's current go began: its latest restart, else its start (else, still
/// pending, its submission).
pub(super) fn current_go_began(run: &Run) -> Timestamp {
    run.restart
        .as_ref()
        .and_then(|r| r.at)
        .or(run.started_at)
        .unwrap_or(run.created_at)
}

/// The attempts that count since the run's latest restart (all of them if it never was).
pub(super) fn counting_attempts(run: &Run) -> impl Iterator<Item = &StepAttempt> {
    run.steps.iter().filter(|a| {
        run.restart
            .as_ref()
            .is_none_or(|r| r.counts(a.index, a.attempt))
    })
}

/// Lists the steps not started yet too, so a run shows its whole plan.
pub(super) fn with_pending_steps(mut run: Run, spec_json: &str) -> Run {
    let Ok(workflow) = serde_json::from_str::<Workflow>(spec_json) else {
        return run;
    };
    run.protected = workflow.protected;
    for (index, step) in workflow.steps.iter().enumerate() {
        if !run.steps.iter().any(|a| a.index as usize == index) {
            run.steps
                .push(StepAttempt::planned(&step.name, index as u32));
        }
    }
    run.steps.sort_by_key(|a| a.index);
    run
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::spec;

    fn workflow(steps: &[&str]) -> Workflow {
        let mut text = String::from("name = \"wf\"\n");
        for s in steps {
            text.push_str(&format!("[[step]]\nname = \"{s}\"\nrun = \"true\"\n"));
        }
        spec::parse(&text, Path::new("/w.toml")).expect("test workflow parses")
    }

    fn run_with(attempts: Vec<StepAttempt>) -> Run {
        Run {
            id: "r".into(),
            workflow: "wf".into(),
            workflow_file: "/w.toml".into(),
            protected: false,
            state: RunState::Running,
            params: BTreeMap::new(),
            worktree: None,
            requested_by: "t".into(),
            user: None,
            created_at: Timestamp(0),
            started_at: None,
            ended_at: None,
            error: None,
            steps: attempts,
            kill: None,
            next_attempt_at: None,
            restart: None,
            failure_class: None,
        }
    }

    fn attempt(index: u32, attempt: u32, state: StepState, result: Option<&str>) -> StepAttempt {
        StepAttempt {
            attempt,
            state,
            result: result.map(str::to_owned),
            ..StepAttempt::planned(&format!("s{index}"), index)
        }
    }

    #[test]
    fn a_fresh_run_starts_its_first_step() {
        let wf = workflow(&["a", "b"]);
        assert_eq!(
            next_action(&wf, &run_with(vec![])),
            Action::Start {
                index: 0,
                attempt: 1
            }
        );
    }

    #[test]
    fn after_a_success_the_next_step_starts_and_after_the_last_the_run_succeeds() {
        let wf = workflow(&["a", "b"]);
        let one = vec![attempt(0, 1, StepState::Succeeded, Some("success"))];
        assert_eq!(
            next_action(&wf, &run_with(one)),
            Action::Start {
                index: 1,
                attempt: 1
            }
        );
        let both = vec![
            attempt(0, 1, StepState::Succeeded, Some("success")),
            attempt(1, 1, StepState::Succeeded, Some("success")),
        ];
        assert_eq!(
            next_action(&wf, &run_with(both)),
            Action::Finish {
                state: RunState::Succeeded,
                reason: None,
                failure: None
            }
        );
    }

    #[test]
    fn a_failed_step_fails_the_run_and_later_steps_do_not_start() {
        let wf = workflow(&["a", "b"]);
        let failed = vec![attempt(0, 1, StepState::Failed, Some("exit-code"))];
        assert_eq!(
            next_action(&wf, &run_with(failed)),
            Action::Finish {
                state: RunState::Failed,
                reason: Some("step a failed: exit-code".into()),
                failure: None
            }
        );
    }

    #[test]
    fn an_adopted_step_is_awaited_and_a_never_started_one_is_started_again() {
        let wf = workflow(&["a"]);
        let running = vec![attempt(0, 2, StepState::Running, None)];
        assert_eq!(
            next_action(&wf, &run_with(running)),
            Action::Await {
                index: 0,
                attempt: 2
            }
        );
        let gate_closed = vec![attempt(0, 1, StepState::Failed, Some(NEVER_STARTED))];
        assert_eq!(
            next_action(&wf, &run_with(gate_closed)),
            Action::Start {
                index: 0,
                attempt: 2
            }
        );
    }

    #[test]
    fn a_retryable_failure_is_retried_until_the_attempts_run_out() {
        let text = "name = \"wf\"\n[[step]]\nname = \"a\"\nrun = \"true\"\n[step.retry]\nmax_attempts = 2\n";
        let wf = spec::parse(text, Path::new("/w.toml")).unwrap();
        let transient = |n| StepAttempt {
            failure_class: Some(FailureClass::Transient),
            failure_evidence: Some("HTTP 529".into()),
            ..attempt(0, n, StepState::Failed, Some("exit-code"))
        };
        assert_eq!(
            next_action(&wf, &run_with(vec![transient(1)])),
            Action::Retry {
                index: 0,
                attempt: 2,
                retry: 1
            }
        );
        assert_eq!(
            next_action(&wf, &run_with(vec![transient(2)])),
            Action::Finish {
                state: RunState::Failed,
                reason: Some("step a failed: transient: HTTP 529".into()),
                failure: Some(FailureClass::Transient)
            }
        );
    }

    #[test]
    fn after_a_restart_earlier_steps_are_done_and_later_ones_start_over() {
        let wf = workflow(&["a", "b", "c"]);
        let mut run = run_with(vec![
            attempt(0, 1, StepState::Succeeded, Some("success")),
            attempt(1, 1, StepState::Killed, Some("killed")),
        ]);
        run.restart = Some(recovery::restart_point(
            Some(2),
            1,
            &BTreeMap::from([(0, 1), (1, 1)]),
            3,
            BTreeMap::new(),
        ));
        assert_eq!(
            next_action(&wf, &run),
            Action::Start {
                index: 1,
                attempt: 2
            }
        );
        run.steps[1] = attempt(1, 2, StepState::Succeeded, Some("success"));
        assert_eq!(
            next_action(&wf, &run),
            Action::Start {
                index: 2,
                attempt: 1
            }
        );
    }
}
