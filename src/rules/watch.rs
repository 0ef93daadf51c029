//! Hot reload: the rule directories are watched (inotify through `notify`), and a change
//! reloads the rules after a short quiet period, well within the 2 s promised.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use super::{Rules, RulesError};

/// How long events are gathered before a reload: an editor's save is several events
/// (write, rename, chmod); one reload covers them.
const SETTLE: Duration = Duration::from_millis(150);

enum Message {
    Changed,
    Stop,
}

/// Keeps the watch alive; dropping it stops watching.
pub struct RulesWatcher {
    tx: mpsc::Sender<Message>,
}

impl RulesWatcher {
    /// Watches the rules' directories as they are now (after [`Rules::set_dirs`]) and
    /// reloads. The old directories stay watched: a change there reloads to no effect.
    pub fn dirs_changed(&self) {
        let _ = self.tx.send(Message::Changed);
    }
}

impl Drop for RulesWatcher {
    fn drop(&mut self) {
        let _ = self.tx.send(Message::Stop);
    }
}

impl Rules {
    /// Watches the rule directories and reloads on any change. A directory that does not
    /// exist yet is watched through its parent, so creating it is seen, and it is watched
    /// itself from then on.
    pub fn watch(&self) -> Result<RulesWatcher, RulesError> {
        let (tx, rx) = mpsc::channel::<Message>();
        let events = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(event) => !matches!(event.kind, notify::EventKind::Access(_)),
                    // A lost event (queue overflow) may hide a change: reload to be sure.
                    Err(_) => true,
                };
                if relevant {
                    let _ = events.send(Message::Changed);
                }
            })?;
        let mut watched = HashSet::new();
        watch_dirs(self, &mut watcher, &mut watched)?;
        let rules = self.clone();
        std::thread::Builder::new()
            .name("drover-rules-watch".into())
            .spawn(move || {
                while let Ok(Message::Changed) = rx.recv() {
                    // Gather the burst, then reload once.
                    loop {
                        match rx.recv_timeout(SETTLE) {
                            Ok(Message::Changed) => continue,
                            Ok(Message::Stop) => return,
                            Err(mpsc::RecvTimeoutError::Timeout) => break,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    if let Err(e) = watch_dirs(&rules, &mut watcher, &mut watched) {
                        tracing::error!(drover_event = "rule-load", "rules watch: {e}");
                    }
                    if let Err(e) = rules.reload() {
                        tracing::error!(drover_event = "rule-load", "rules reload failed: {e}");
                    }
                }
            })
            .map_err(RulesError::Thread)?;
        Ok(RulesWatcher { tx })
    }
}

/// Watches each rule directory, or its parent while it does not exist.
fn watch_dirs(
    rules: &Rules,
    watcher: &mut notify::RecommendedWatcher,
    watched: &mut HashSet<PathBuf>,
) -> Result<(), RulesError> {
    let dirs = rules.dirs();
    for dir in dirs.all() {
        let target = if dir.is_dir() {
            Some(dir.clone())
        } else {
            dir.parent().filter(|p| p.is_dir()).map(PathBuf::from)
        };
        if let Some(target) = target.filter(|t| !watched.contains(t)) {
            watcher.watch(&target, RecursiveMode::NonRecursive)?;
            watched.insert(target);
        }
    }
    Ok(())
}
