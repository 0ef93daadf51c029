//! Termination of a step's scope: wait out a critical section, SIGTERM (the agent's main
//! process first for agent steps), grace, SIGKILL until the cgroup reads empty, verify,
//! remove the unit; then clean up after it (the step's `on_kill` commands, stale git
//! locks). The engine records each phase; this module only does them and times them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cgroup;
use crate::credentials::{self, Account};
use crate::model::{CleanupAction, CriticalWait, KillPhase};
use crate::systemd::{Systemd, SystemdError};

/// How often the cgroup is read while waiting for it to empty.
const POLL: Duration = Duration::from_millis(5);

/// The scope being killed.
pub struct Target<'a> {
    pub unit: &'a str,
    /// The shim's pid: its child is the step's main process.
    pub shim_pid: Option<u32>,
    /// An agent step (Claude Code) gets SIGTERM to its main process first, so it can
    /// finish its transcript and stop its own children.
    pub agent_step: bool,
}

/// When the kill was requested and how long each phase may take.
pub struct Clock {
    pub requested: Instant,
    pub grace: Duration,
    /// SIGKILL gives up after this: the rest of the budget is cleanup's.
    pub deadline: Instant,
}

impl Clock {
    fn since_request(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.requested).as_millis() as u64
    }

    fn phase(
        &self,
        name: &str,
        started: Instant,
        signalled: usize,
        note: Option<String>,
    ) -> KillPhase {
        KillPhase {
            name: name.to_owned(),
            started_ms: self.since_request(started),
            duration_ms: started.elapsed().as_millis() as u64,
            signalled: signalled as u32,
            note,
        }
    }
}

/// What the signal phases did, and what was left.
pub struct Termination {
    pub phases: Vec<KillPhase>,
    pub processes_left: u32,
}

/// Waits while a critical section is open: `still_critical` answers with the labels of
/// what is open (empty once it is over). Returns `None` if nothing was open.
pub async fn wait_critical(
    max: Duration,
    mut still_critical: impl FnMut() -> Vec<String>,
) -> Option<CriticalWait> {
    let first = still_critical();
    if first.is_empty() {
        return None;
    }
    let started = Instant::now();
    let mut labels: BTreeSet<String> = first.into_iter().collect();
    let outcome = loop {
        let open = still_critical();
        if open.is_empty() {
            break "ended";
        }
        labels.extend(open);
        if started.elapsed() >= max {
            break "overridden";
        }
        tokio::time::sleep(POLL).await;
    };
    Some(CriticalWait {
        labels: labels.into_iter().collect(),
        waited_ms: started.elapsed().as_millis() as u64,
        outcome: outcome.to_owned(),
    })
}

/// Signals the scope until its cgroup is empty, then removes the unit.
pub async fn scope(
    systemd: &Systemd,
    target: &Target<'_>,
    clock: &Clock,
) -> Result<Termination, SystemdError> {
    let mut phases = Vec::new();
    let Some(control_group) = systemd.control_group(target.unit).await? else {
        // The scope is already gone (the step ended by itself): nothing left to signal.
        let note = Some("unit already gone; 0 processes left".to_owned());
        phases.push(clock.phase("verify", Instant::now(), 0, note));
        return Ok(Termination {
            phases,
            processes_left: 0,
        });
    };
    let mounts = cgroup::Mounts::discover();
    let procs = || mounts.procs(&control_group).unwrap_or_default();
    let grace_end = Instant::now() + clock.grace;

    if target.agent_step {
        let started = Instant::now();
        let main = target.shim_pid.and_then(|shim| {
            procs()
                .into_iter()
                .find(|&pid| cgroup::parent_of(pid) == i32::try_from(shim).ok())
        });
        if let Some(main) = main {
            let _ = kill(Pid::from_raw(main), Signal::SIGTERM);
            let half = Instant::now() + clock.grace / 2;
            wait_empty(&procs, half).await;
            let note = Some(format!(
                "pid {main}; the rest of the scope after half the grace"
            ));
            phases.push(clock.phase("sigterm-main", started, 1, note));
        }
    }
    if !procs().is_empty() {
        let started = Instant::now();
        let signalled = procs().len();
        systemd
            .kill_unit(target.unit, Signal::SIGTERM as i32)
            .await?;
        wait_empty(&procs, grace_end).await;
        phases.push(clock.phase("sigterm", started, signalled, None));
    }
    if !procs().is_empty() {
        let started = Instant::now();
        let mut signalled = BTreeSet::new();
        let left = procs();
        signalled.extend(left.iter().copied());
        systemd
            .kill_unit(target.unit, Signal::SIGKILL as i32)
            .await?;
        // Forking processes can add to the cgroup while it is being killed: repeat over
        // cgroup.procs until it reads empty.
        loop {
            let left = procs();
            if left.is_empty() || Instant::now() >= clock.deadline {
                break;
            }
            for pid in left {
                signalled.insert(pid);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        phases.push(clock.phase("sigkill", started, signalled.len(), None));
    }

    let started = Instant::now();
    // The unit itself: stop it (a no-op when systemd already collected it) and wait until
    // systemd has forgotten it; a failed unit stays loaded until reset.
    systemd.stop_unit(target.unit).await?;
    let unit_deadline = Instant::now() + Duration::from_secs(2);
    let unit_gone = loop {
        match systemd.scope_outcome(target.unit).await? {
            None => break true,
            Some(o) if matches!(o.active_state.as_str(), "inactive" | "failed") => {
                systemd.reset_failed(target.unit).await?;
            }
            Some(_) => {}
        }
        if Instant::now() >= unit_deadline {
            break false;
        }
        tokio::time::sleep(POLL).await;
    };
    // Both views must agree the scope is empty: its cgroup.procs, and every process's own
    // /proc/<pid>/cgroup (whatever the hierarchy).
    let processes_left = procs()
        .len()
        .max(cgroup::live_processes_in(target.unit).len()) as u32;
    let note = format!(
        "{processes_left} processes left; unit {}",
        if unit_gone { "gone" } else { "still loaded" }
    );
    phases.push(clock.phase("verify", started, 0, Some(note)));
    Ok(Termination {
        phases,
        processes_left: if unit_gone {
            processes_left
        } else {
            processes_left.max(1)
        },
    })
}

async fn wait_empty(procs: &impl Fn() -> Vec<i32>, until: Instant) {
    while !procs().is_empty() && Instant::now() < until {
        tokio::time::sleep(POLL).await;
    }
}

/// Runs the step's `on_kill` commands (outside the dead scope, each bounded by `timeout`)
/// in `cwd` with `env`.
pub async fn run_on_kill(
    commands: &[String],
    cwd: &Path,
    env: &[(String, String)],
    account: &Account,
    timeout: Duration,
) -> Vec<CleanupAction> {
    let mut actions = Vec::new();
    for command in commands {
        let mut shell = std::process::Command::new("/bin/sh");
        shell
            .arg("-c")
            .arg(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null());
        credentials::drop_before_exec(&mut shell, account, cwd);
        let child = tokio::process::Command::from(shell)
            .kill_on_drop(true)
            .output();
        let (ok, detail) = match tokio::time::timeout(timeout, child).await {
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                // At a character boundary: the output is the command's, any bytes at all.
                let cut = (0..=text.len().min(1024))
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                (
                    out.status.success(),
                    format!("{}: {}", out.status, text.trim()),
                )
            }
            Ok(Err(e)) => (false, format!("cannot run: {e}")),
            Err(_) => (false, format!("killed after {timeout:?}")),
        };
        actions.push(CleanupAction {
            action: format!("on_kill: {command}"),
            ok,
            detail,
        });
    }
    actions
}

/// Removes git's lock files in the worktree's own git dir: every process that could hold
/// them is dead, so a lock left there would only block the next run. The main
/// repository's locks are the user's and are left alone.
pub fn remove_stale_git_locks(worktree: &Path) -> Vec<CleanupAction> {
    let Some(git_dir) = worktree_git_dir(worktree) else {
        return Vec::new();
    };
    ["index.lock", "HEAD.lock", "ORIG_HEAD.lock", "config.lock"]
        .iter()
        .map(|name| git_dir.join(name))
        .filter(|lock| lock.exists())
        .map(|lock| {
            let result = std::fs::remove_file(&lock);
            CleanupAction {
                action: format!("remove stale lock {}", lock.display()),
                ok: result.is_ok(),
                detail: result
                    .err()
                    .map_or_else(|| "removed".to_owned(), |e| e.to_string()),
            }
        })
        .collect()
}

/// `<worktree>/.git` is a file naming the worktree's private git dir.
fn worktree_git_dir(worktree: &Path) -> Option<PathBuf> {
    let dot_git = worktree.join(".git");
    if dot_git.is_dir() {
        return Some(dot_git);
    }
    let text = std::fs::read_to_string(dot_git).ok()?;
    let dir = PathBuf::from(text.trim().strip_prefix("gitdir:")?.trim());
    Some(if dir.is_absolute() {
        dir
    } else {
        worktree.join(dir)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_locks_in_the_worktree_git_dir_are_removed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let git_dir = dir.path().join("main/.git/worktrees/r1");
        std::fs::create_dir_all(&git_dir).unwrap();
        let worktree = dir.path().join("wt");
        std::fs::create_dir_all(&worktree).unwrap();
        std::fs::write(
            worktree.join(".git"),
            format!("gitdir: {}\n", git_dir.display()),
        )
        .unwrap();
        std::fs::write(git_dir.join("index.lock"), "").unwrap();
        let actions = remove_stale_git_locks(&worktree);
        assert_eq!(actions.len(), 1);
        assert!(
            actions[0].ok && actions[0].action.ends_with("index.lock"),
            "{actions:?}"
        );
        assert!(!git_dir.join("index.lock").exists());
        assert!(
            remove_stale_git_locks(&worktree).is_empty(),
            "nothing left to remove"
        );
    }

    #[tokio::test]
    async fn on_kill_commands_run_with_their_output_and_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let env = [("DROVER_RUN".to_owned(), "r1".to_owned())];
        let commands = [
            "echo cleaned $DROVER_RUN".to_owned(),
            "sleep 5".to_owned(),
            "exit 3".to_owned(),
        ];
        let agent = Account::agent().expect("the agent's own account");
        let actions = run_on_kill(
            &commands,
            dir.path(),
            &env,
            &agent,
            Duration::from_millis(300),
        )
        .await;
        assert!(
            actions[0].ok && actions[0].detail.ends_with("cleaned r1"),
            "{actions:?}"
        );
        assert!(
            !actions[1].ok && actions[1].detail.contains("killed after"),
            "{actions:?}"
        );
        assert!(!actions[2].ok, "{actions:?}");
    }
}
