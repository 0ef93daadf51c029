//! What wakes the waits for step ends, one for all the steps being awaited (not one per
//! step): an inotify watcher, so that a write to a step's exit file or log wakes that
//! step's wait at once, and a listing of the active step scopes every second (one D-Bus
//! `ListUnitsByPatterns`), so that a wait learns its scope is gone.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use notify::Watcher;
use tokio::sync::Notify;

use super::Inner;
use crate::sync::lock;

/// How often the step scopes are listed (and how often a wait checks on its step when no
/// write wakes it).
pub(super) const SCOPE_LISTING_PERIOD: Duration = Duration::from_secs(1);

/// A snapshot of the active `drover-*.scope` units.
#[derive(Debug, Clone, Default)]
pub(super) struct LiveScopes {
    /// When the listing was taken; `None` before the first one.
    pub(super) taken: Option<tokio::time::Instant>,
    pub(super) active: HashSet<String>,
}

/// Whether a unit in systemd's `active_state` still holds its processes.
pub(super) fn is_live(active_state: &str) -> bool {
    matches!(
        active_state,
        "active" | "activating" | "deactivating" | "reloading"
    )
}

/// Refreshes the engine's `live_scopes` every `SCOPE_LISTING_PERIOD` while it lives.
pub(super) async fn list_scopes(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SCOPE_LISTING_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        match inner.systemd.list_scopes("drover-*.scope").await {
            Ok(scopes) => {
                let active = scopes
                    .into_iter()
                    .filter(|s| is_live(&s.active_state))
                    .map(|s| s.name)
                    .collect();
                inner.live_scopes.send_replace(LiveScopes {
                    taken: Some(tokio::time::Instant::now()),
                    active,
                });
            }
            Err(e) => tracing::warn!("cannot list the step scopes: {e}"),
        }
    }
}

type Waiters = Arc<Mutex<HashMap<PathBuf, Arc<Notify>>>>;

pub(super) struct FileWakeups {
    waiters: Waiters,
    /// `None` if inotify is unavailable: waits then fall back to their periodic checks.
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// Watched directories and how many registrations use each.
    dirs: Mutex<HashMap<PathBuf, usize>>,
}

/// Wakes on writes to its files until dropped.
pub(super) struct Registration<'a> {
    owner: &'a FileWakeups,
    files: Vec<PathBuf>,
    dir: PathBuf,
    pub(super) wake: Arc<Notify>,
}

impl FileWakeups {
    pub(super) fn new() -> FileWakeups {
        let waiters: Waiters = Arc::default();
        let seen = waiters.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Only writes: the waits' own reads of the logs raise access events, and waking
            // on those would spin them.
            let Ok(event) = event else { return };
            if !matches!(
                event.kind,
                notify::EventKind::Create(_) | notify::EventKind::Modify(_)
            ) {
                return;
            }
            let waiters = lock(&seen);
            for path in &event.paths {
                if let Some(wake) = waiters.get(path) {
                    wake.notify_one();
                }
            }
        })
        .inspect_err(|e| tracing::warn!("no inotify ({e}): step ends are noticed within a second"))
        .ok();
        FileWakeups {
            waiters,
            watcher: Mutex::new(watcher),
            dirs: Mutex::default(),
        }
    }

    /// Wakes the returned registration on writes to `files`, which live in `dir`.
    pub(super) fn register(&self, dir: &Path, files: &[PathBuf]) -> Registration<'_> {
        let wake = Arc::new(Notify::new());
        {
            let mut waiters = lock(&self.waiters);
            for file in files {
                waiters.insert(file.clone(), wake.clone());
            }
        }
        let mut dirs = lock(&self.dirs);
        let uses = dirs.entry(dir.to_owned()).or_default();
        if *uses == 0
            && let Some(watcher) = lock(&self.watcher).as_mut()
        {
            let _ = watcher.watch(dir, notify::RecursiveMode::NonRecursive);
        }
        *uses += 1;
        Registration {
            owner: self,
            files: files.to_vec(),
            dir: dir.to_owned(),
            wake,
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        {
            let mut waiters = lock(&self.owner.waiters);
            for file in &self.files {
                waiters.remove(file);
            }
        }
        let mut dirs = lock(&self.owner.dirs);
        if let Some(uses) = dirs.get_mut(&self.dir) {
            *uses -= 1;
            if *uses == 0 {
                dirs.remove(&self.dir);
                if let Some(watcher) = lock(&self.owner.watcher).as_mut() {
                    let _ = watcher.unwatch(&self.dir);
                }
            }
        }
    }
}
