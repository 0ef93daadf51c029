//! Rules in Rhai: `*.rhai` files from the shipped directory and the operator's (a file of
//! the operator's overrides the shipped one of the same name), compiled once, evaluated
//! every tick for every run, sandboxed ([`sandbox`]), each rule on a thread of its own that
//! a tick waits for only up to the time cap (`evaluator`). A rule sees one run at a time
//! ([`RunView`]) and asks for actions; [`Rules::evaluate`] only collects them, the
//! integrator (`automation`) raises the alerts and carries the actions out.
//!
//! A file that fails to compile keeps its previous version running; its error is logged
//! and listed by [`Rules::load_errors`] until the file is fixed.

mod evaluator;
pub mod sandbox;
pub mod view;
pub mod watch;

#[cfg(test)]
mod shipped_tests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use rhai::{AST, Engine, EvalAltResult, ParseError, Position};
use serde::{Deserialize, Serialize};

use crate::auth::Role;
use crate::model::{Firing, Severity};
use crate::sync::{lock, read, write};
pub use view::{History, LimitsView, RunView};

/// The file extension of rule files.
pub const EXTENSION: &str = "rhai";

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{path}: cannot read the rules directory: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch the rules directories: {0}")]
    Watch(#[from] notify::Error),
    #[error("cannot start the rules watcher thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A rule file that could not be loaded (read or compiled), with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", location(path, *line, *column))]
pub struct LoadError {
    pub rule: String,
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// Whether an earlier version of the rule keeps running in its place.
    pub previous_kept: bool,
}

/// A rule that failed while evaluating a run (a runtime error, the operation or time
/// limit); the rule's other runs and the other rules go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: rule {rule} on run {run}: {message}", location(path, *line, *column))]
pub struct RuleError {
    pub rule: String,
    pub run: String,
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    /// Stopped by a sandbox limit (operations, time, sizes, call depth).
    pub limit: bool,
}

fn location(path: &Path, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", path.display()),
        (Some(l), None) => format!("{}:{l}", path.display()),
        _ => path.display().to_string(),
    }
}

/// What a rule asked to be done to a run.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Kill { reason: String },
    Restart,
    Checkpoint { label: String },
}

impl ActionKind {
    pub fn name(&self) -> &'static str {
        match self {
            ActionKind::Kill { .. } => "kill",
            ActionKind::Restart => "restart",
            ActionKind::Checkpoint { .. } => "checkpoint",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleAction {
    pub rule: String,
    pub run: String,
    pub kind: ActionKind,
}

/// One tick's results.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TickOutcome {
    /// Every (rule, run) evaluated, in order.
    pub evaluated: Vec<(String, String)>,
    /// Microseconds each of `evaluated` took, same order.
    pub micros: Vec<u64>,
    /// At most one per (rule, run): its most severe `alert()` of the tick. Rules fire on
    /// every tick while their condition holds; the alerts part dedupes and resolves.
    pub firings: Vec<Firing>,
    /// Actions asked for for the first time: an action a rule keeps asking for is given
    /// once per run (until the run leaves the views passed in, e.g. ends).
    pub actions: Vec<RuleAction>,
    pub errors: Vec<RuleError>,
}

/// Running totals of evaluation time, for the agent's self-metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalStats {
    /// (rule, run) evaluations since start.
    pub evaluations: u64,
    pub total_micros: u64,
    pub max_micros: u64,
    /// Evaluations that ended in an error (limits included).
    pub errors: u64,
    /// Per rule: evaluations and their total microseconds.
    pub per_rule: BTreeMap<String, (u64, u64)>,
    /// The last tick's wall time, microseconds.
    pub last_tick_micros: u64,
}

/// `[rules]`: the operator's rule directory and the role rules act with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// The operator's rules (`*.rhai`), beside the shipped ones; default `<config dir>/rules`.
    #[serde(deserialize_with = "crate::quantity::absolute_path")]
    pub dir: Option<PathBuf>,
    /// The shipped rules' directory; default the `rules/` installed with drover.
    #[serde(deserialize_with = "crate::quantity::absolute_path")]
    pub shipped_dir: Option<PathBuf>,
    /// The role of the `rules` principal: viewer (alerts only), operator or admin.
    pub role: Role,
}

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig {
            dir: None,
            shipped_dir: None,
            role: Role::Operator,
        }
    }
}

/// Where rules are loaded from, lowest precedence first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleDirs {
    pub shipped: Option<PathBuf>,
    pub operator: Option<PathBuf>,
}

impl RuleDirs {
    /// The configured directories, or their defaults: `<config dir>/rules` for the
    /// operator's, and for the shipped ones the first that exists of
    /// `<exe dir>/../share/drover/rules`, `/usr/share/drover/rules` and the source tree's
    /// `rules/` (a development build).
    pub fn from_config(config: &RulesConfig, config_file: &Path) -> RuleDirs {
        let operator = config
            .dir
            .clone()
            .or_else(|| config_file.parent().map(|dir| dir.join("rules")));
        let shipped = config.shipped_dir.clone().or_else(|| {
            let beside_exe = std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("../share/drover/rules")));
            beside_exe
                .into_iter()
                .chain([
                    PathBuf::from("/usr/share/drover/rules"),
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
                ])
                .find(|d| d.is_dir())
        });
        RuleDirs { shipped, operator }
    }

    fn all(&self) -> impl Iterator<Item = &PathBuf> {
        self.shipped.iter().chain(self.operator.iter())
    }

    /// The rule files in effect, by rule name: the operator's over the shipped ones. A
    /// directory that does not exist holds no rules (the operator may have none).
    pub fn files(&self) -> Result<BTreeMap<String, PathBuf>, RulesError> {
        let mut files = BTreeMap::new();
        for dir in self.all() {
            for (name, path) in rule_files(dir)? {
                files.insert(name, path);
            }
        }
        Ok(files)
    }
}

/// The `*.rhai` files directly in `dir`, by rule name (the file stem).
pub fn rule_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>, RulesError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(RulesError::ReadDir {
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut files = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|source| RulesError::ReadDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        // Editors' temporary and backup files (`.x.rhai.swp`, `x.rhai~`) end otherwise.
        let is_rule = path.extension().is_some_and(|e| e == EXTENSION)
            && path.is_file()
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if let (true, Some(stem)) = (is_rule, path.file_stem()) {
            files.insert(stem.to_string_lossy().into_owned(), path);
        }
    }
    Ok(files)
}

/// One compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    path: PathBuf,
    source: String,
    ast: Arc<AST>,
}

#[derive(Debug, Default)]
struct RuleSet {
    rules: BTreeMap<String, Rule>,
    /// By rule name: the current file's error, while it has one.
    errors: BTreeMap<String, LoadError>,
    /// Bumped by every reload that changed something.
    generation: u64,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReloadReport {
    /// Rules (re)compiled and now in effect.
    pub loaded: Vec<String>,
    /// Rules whose file is gone.
    pub removed: Vec<String>,
    /// Files that failed; any previous version of theirs keeps running.
    pub errors: Vec<LoadError>,
}

impl ReloadReport {
    pub fn changed(&self) -> bool {
        !self.loaded.is_empty() || !self.removed.is_empty() || !self.errors.is_empty()
    }
}

struct Shared {
    engine: Arc<Engine>,
    evaluators: Mutex<evaluator::Evaluators>,
    /// Replaced by a config reload that names other directories.
    dirs: RwLock<RuleDirs>,
    set: RwLock<RuleSet>,
    /// (rule, run, action) already given out: an action is given once per run.
    given: Mutex<HashSet<RuleAction>>,
    stats: Mutex<EvalStats>,
}

/// The loaded rules; cheap to clone (shared), safe to evaluate from any thread.
#[derive(Clone)]
pub struct Rules {
    shared: Arc<Shared>,
}

impl Rules {
    /// Loads every rule of `dirs`. Files that fail are in [`Rules::load_errors`]; an
    /// unreadable directory is an error.
    pub fn load(dirs: RuleDirs) -> Result<Rules, RulesError> {
        let engine = Arc::new(sandbox::engine());
        let rules = Rules {
            shared: Arc::new(Shared {
                evaluators: Mutex::new(evaluator::Evaluators::new(engine.clone())),
                engine,
                dirs: RwLock::new(dirs),
                set: RwLock::new(RuleSet::default()),
                given: Mutex::new(HashSet::new()),
                stats: Mutex::new(EvalStats::default()),
            }),
        };
        rules.reload()?;
        Ok(rules)
    }

    pub fn dirs(&self) -> RuleDirs {
        read(&self.shared.dirs).clone()
    }

    /// Loads the rules from other directories (a config reload): rules only in the old
    /// ones are dropped, the others (re)compiled as by [`Rules::reload`]. The actions
    /// already given stay given, so a rule does not act twice on a run. An unreadable
    /// directory changes nothing. A watcher watches the new directories once told
    /// ([`watch::RulesWatcher::dirs_changed`]).
    pub fn set_dirs(&self, dirs: RuleDirs) -> Result<ReloadReport, RulesError> {
        dirs.files()?;
        *write(&self.shared.dirs) = dirs;
        self.reload()
    }

    /// Re-reads the directories: new and changed files are compiled (a failure keeps the
    /// previous version), rules whose file is gone are dropped. Errors are logged.
    pub fn reload(&self) -> Result<ReloadReport, RulesError> {
        let files = self.dirs().files()?;
        let mut report = ReloadReport::default();
        // Read and compile outside the lock: evaluation goes on meanwhile.
        let current: BTreeMap<String, (PathBuf, String)> = {
            let set = self.read_set();
            set.rules
                .iter()
                .map(|(n, r)| (n.clone(), (r.path.clone(), r.source.clone())))
                .collect()
        };
        let mut compiled = Vec::new();
        for (name, path) in &files {
            let source = match std::fs::read_to_string(path) {
                Ok(source) => source,
                Err(e) => {
                    report.errors.push(LoadError {
                        rule: name.clone(),
                        path: path.clone(),
                        line: None,
                        column: None,
                        message: format!("cannot read: {e}"),
                        previous_kept: current.contains_key(name),
                    });
                    continue;
                }
            };
            if current
                .get(name)
                .is_some_and(|(p, s)| p == path && *s == source)
            {
                continue;
            }
            match compile(&self.shared.engine, name, path, &source) {
                Ok(ast) => compiled.push((
                    name.clone(),
                    Rule {
                        path: path.clone(),
                        source,
                        ast: Arc::new(ast),
                    },
                )),
                Err(mut e) => {
                    e.previous_kept = current.contains_key(name);
                    report.errors.push(e);
                }
            }
        }
        let mut set = self.write_set();
        for (name, rule) in compiled {
            set.errors.remove(&name);
            set.rules.insert(name.clone(), rule);
            report.loaded.push(name);
        }
        let gone: Vec<String> = set
            .rules
            .keys()
            .filter(|n| !files.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            set.rules.remove(&name);
            report.removed.push(name);
        }
        set.errors.retain(|name, _| files.contains_key(name));
        for error in &report.errors {
            // Logged once per distinct error, not on every reload that sees it again.
            if set.errors.get(&error.rule) != Some(error) {
                tracing::error!(
                    drover_event = "rule-load",
                    "rule {} not loaded: {error}{}",
                    error.rule,
                    if error.previous_kept {
                        " (its previous version keeps running)"
                    } else {
                        ""
                    }
                );
            }
            set.errors.insert(error.rule.clone(), error.clone());
        }
        for name in &report.loaded {
            tracing::info!(drover_event = "rule-load", "rule {name} loaded");
        }
        for name in &report.removed {
            tracing::info!(drover_event = "rule-load", "rule {name} removed");
        }
        if report.changed() {
            set.generation += 1;
        }
        Ok(report)
    }

    /// The rule files whose current version failed to load, by rule name.
    pub fn load_errors(&self) -> Vec<LoadError> {
        self.read_set().errors.values().cloned().collect()
    }

    /// The rules in effect and the file each came from.
    pub fn rules(&self) -> Vec<(String, PathBuf)> {
        self.read_set()
            .rules
            .iter()
            .map(|(n, r)| (n.clone(), r.path.clone()))
            .collect()
    }

    /// Changes on every reload that changed something: lets a caller notice new load
    /// errors without comparing lists.
    pub fn generation(&self) -> u64 {
        self.read_set().generation
    }

    pub fn stats(&self) -> EvalStats {
        lock(&self.shared.stats).clone()
    }

    /// Evaluates every rule against every run in `views`. Pass every run the rules should
    /// watch on every tick: a run absent from `views` forgets which actions were given
    /// for it. Blocks for at most `evaluator::MAX_WAIT` per run and rule; an evaluation
    /// not back by then is an error, and its rule skipped (an error per run) until it is.
    pub fn evaluate(&self, views: &[RunView]) -> TickOutcome {
        let tick = Instant::now();
        // Clone the ASTs' handles so a reload can swap them while this tick runs.
        let rules: Vec<(String, Rule)> = self
            .read_set()
            .rules
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect();
        let mut evaluations = lock(&self.shared.evaluators).evaluate(&rules, views);
        // In the order of the views, and of the rules for each.
        evaluations.sort_by_key(|e| (e.view, e.rule));
        let mut outcome = TickOutcome::default();
        let mut requested = Vec::new();
        for evaluation in evaluations {
            let name = &rules[evaluation.rule].0;
            let view = &views[evaluation.view];
            if let Some(micros) = evaluation.micros {
                outcome.evaluated.push((name.clone(), view.run.clone()));
                outcome.micros.push(micros);
            }
            match evaluation.result {
                Ok(collected) => {
                    collect_outcome(name, view, collected, &mut outcome, &mut requested)
                }
                Err(error) => {
                    tracing::warn!(
                        drover_run = %view.run,
                        drover_event = "rule-error",
                        "{error}"
                    );
                    outcome.errors.push(*error);
                }
            }
        }
        {
            let mut given = lock(&self.shared.given);
            let present: HashSet<&str> = views.iter().map(|v| v.run.as_str()).collect();
            given.retain(|a| present.contains(a.run.as_str()));
            for action in requested {
                if given.insert(action.clone()) {
                    outcome.actions.push(action);
                }
            }
        }
        let mut stats = lock(&self.shared.stats);
        for ((name, _), micros) in outcome.evaluated.iter().zip(&outcome.micros) {
            stats.evaluations += 1;
            stats.total_micros += micros;
            stats.max_micros = stats.max_micros.max(*micros);
            let entry = stats.per_rule.entry(name.clone()).or_default();
            entry.0 += 1;
            entry.1 += micros;
        }
        stats.errors += outcome.errors.len() as u64;
        stats.last_tick_micros = tick.elapsed().as_micros() as u64;
        outcome
    }

    fn read_set(&self) -> std::sync::RwLockReadGuard<'_, RuleSet> {
        read(&self.shared.set)
    }

    fn write_set(&self) -> std::sync::RwLockWriteGuard<'_, RuleSet> {
        write(&self.shared.set)
    }
}

fn collect_outcome(
    rule: &str,
    view: &RunView,
    collected: Vec<sandbox::Collected>,
    outcome: &mut TickOutcome,
    requested: &mut Vec<RuleAction>,
) {
    let mut alert: Option<(Severity, String)> = None;
    for c in collected {
        let kind = match c {
            sandbox::Collected::Alert { severity, summary } => {
                if alert.as_ref().is_none_or(|(s, _)| severity > *s) {
                    alert = Some((severity, summary));
                }
                continue;
            }
            sandbox::Collected::Kill { reason } => ActionKind::Kill { reason },
            sandbox::Collected::Restart => ActionKind::Restart,
            sandbox::Collected::Checkpoint { label } => ActionKind::Checkpoint { label },
        };
        let action = RuleAction {
            rule: rule.to_owned(),
            run: view.run.clone(),
            kind,
        };
        // One kill (or restart) per rule and run, whatever its reason says this tick.
        let duplicate = requested.iter().any(|a: &RuleAction| {
            a.rule == action.rule && a.run == action.run && same_action(&a.kind, &action.kind)
        });
        if !duplicate {
            requested.push(action);
        }
    }
    if let Some((severity, summary)) = alert {
        outcome.firings.push(Firing {
            rule: rule.to_owned(),
            run: view.run.clone(),
            workflow: view.workflow.clone(),
            severity,
            summary,
        });
    }
}

/// Whether two actions count as the same for giving them once: kills and restarts
/// regardless of their reason, checkpoints by label.
fn same_action(a: &ActionKind, b: &ActionKind) -> bool {
    match (a, b) {
        (ActionKind::Checkpoint { label: x }, ActionKind::Checkpoint { label: y }) => x == y,
        _ => a.name() == b.name(),
    }
}

/// Compiles a rule with every variable a rule may use declared, so a misspelt one fails
/// here.
fn compile(engine: &Engine, name: &str, path: &Path, source: &str) -> Result<AST, LoadError> {
    let scope = RunView::sample().scope();
    let refused = |pos: Position, message: String| {
        let (line, column) = position(pos);
        LoadError {
            rule: name.to_owned(),
            path: path.to_owned(),
            line,
            column,
            message,
            previous_kept: false,
        }
    };
    let mut ast = engine
        .compile_with_scope(&scope, source)
        .map_err(|e: ParseError| refused(e.position(), e.err_type().to_string()))?;
    if let Some((pos, why)) = sandbox::unavailable_call(&ast) {
        return Err(refused(pos, why));
    }
    ast.set_source(name);
    Ok(ast)
}

fn position(pos: Position) -> (Option<usize>, Option<usize>) {
    (pos.line(), pos.position())
}

fn run_rule(
    engine: &Engine,
    name: &str,
    rule: &Rule,
    view: &RunView,
) -> Result<Vec<sandbox::Collected>, Box<RuleError>> {
    let mut scope = view.scope();
    sandbox::begin_evaluation();
    let result = engine.run_ast_with_scope(&mut scope, &rule.ast);
    let collected = sandbox::end_evaluation();
    match result {
        Ok(()) => Ok(collected),
        // A failed evaluation asks for nothing, not for what it asked before failing.
        Err(e) => Err(Box::new(rule_error(name, &rule.path, view, *e))),
    }
}

fn rule_error(name: &str, path: &Path, view: &RunView, mut e: EvalAltResult) -> RuleError {
    let limit = matches!(
        &e,
        EvalAltResult::ErrorTooManyOperations(..)
            | EvalAltResult::ErrorTerminated(..)
            | EvalAltResult::ErrorDataTooLarge(..)
            | EvalAltResult::ErrorStackOverflow(..)
            | EvalAltResult::ErrorTooManyModules(..)
    );
    let (line, column) = position(e.position());
    let message = match &e {
        EvalAltResult::ErrorTooManyOperations(..) => format!(
            "stopped after {} operations (the limit; an endless loop?)",
            sandbox::MAX_OPERATIONS
        ),
        EvalAltResult::ErrorTerminated(why, ..) => format!("stopped: {why}"),
        // The message without Rhai's own " (line x, position y)" suffix: we print ours.
        _ => {
            e.clear_position();
            e.to_string()
        }
    };
    RuleError {
        rule: name.to_owned(),
        run: view.run.clone(),
        path: path.to_owned(),
        line,
        column,
        message,
        limit,
    }
}

/// One rule file checked by [`check_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            location(&self.path, self.line, self.column),
            self.message
        )
    }
}

/// Compiles the rule at `path` and dry-runs it against [`RunView::sample`] and against a
/// run with no metrics yet (every metric `()`), as `drover rules check` does. Returns the
/// actions it asked for against the sample, or its errors.
pub fn check_file(path: &Path) -> Result<Vec<String>, Vec<CheckError>> {
    let engine = Arc::new(sandbox::engine());
    let name = path
        .file_stem()
        .map_or_else(|| "rule".to_owned(), |s| s.to_string_lossy().into_owned());
    let source = std::fs::read_to_string(path).map_err(|e| {
        vec![CheckError {
            path: path.to_owned(),
            line: None,
            column: None,
            message: format!("cannot read: {e}"),
        }]
    })?;
    let ast = compile(&engine, &name, path, &source).map_err(|e| {
        vec![CheckError {
            path: e.path,
            line: e.line,
            column: e.column,
            message: e.message,
        }]
    })?;
    let rule = Rule {
        path: path.to_owned(),
        source,
        ast: Arc::new(ast),
    };
    let mut errors = Vec::new();
    let mut asked = Vec::new();
    let views = [RunView::sample(), RunView::bare()];
    let mut evaluations = evaluator::Evaluators::new(engine).evaluate(&[(name, rule)], &views);
    evaluations.sort_by_key(|e| e.view);
    for evaluation in evaluations {
        let what = ["a sample run", "a run with no metrics"][evaluation.view];
        match evaluation.result {
            Ok(collected) if asked.is_empty() => {
                asked = collected.iter().map(|c| format!("{c:?}")).collect();
            }
            Ok(_) => {}
            Err(e) => errors.push(CheckError {
                path: e.path,
                line: e.line,
                column: e.column,
                message: format!("on {what}: {}", e.message),
            }),
        }
    }
    if errors.is_empty() {
        Ok(asked)
    } else {
        Err(errors)
    }
}
