//! The Rhai engine rules run in: resource limits, no `eval`, no `import`, no file or
//! process access (core Rhai has none, and only the standard package is registered), nothing
//! that waits ([`UNAVAILABLE`]), the helpers (`gib`, `minutes`, …) and the actions (`alert`,
//! `kill`, …), which are only collected here: the integrator carries them out after the tick.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use rhai::packages::{Package, StandardPackage};
use rhai::{AST, ASTNode, Dynamic, Engine, EvalAltResult, Expr, FLOAT, INT, Position, Stmt};

use crate::model::Severity;

/// Operations one rule may spend on one run: generous for a rule of a few dozen lines
/// (the shipped ones take a few hundred), small enough that a runaway loop ends in
/// milliseconds instead of holding the tick.
pub const MAX_OPERATIONS: u64 = 100_000;
/// Wall-clock cap per evaluation, on top of the operation count: an operation can be slow
/// (a long string built up), and the tick must go on. Checked between operations; the
/// tick's own wait (`evaluator::MAX_WAIT`) covers a function that does not return.
pub const MAX_EVAL_TIME: Duration = Duration::from_millis(250);
pub const MAX_CALL_LEVELS: usize = 16;
pub const MAX_STRING_SIZE: usize = 16 * 1024;
pub const MAX_ARRAY_SIZE: usize = 1024;
pub const MAX_MAP_SIZE: usize = 256;
pub const MAX_EXPR_DEPTH: usize = 64;
pub const MAX_FN_EXPR_DEPTH: usize = 32;
/// Lines one evaluation may `print` or `debug` to the agent's log; a rule printing in a loop
/// would otherwise write megabytes per tick.
pub const MAX_PRINTED_LINES: u32 = 10;

/// Functions of Rhai's standard package that a rule may not call, with why. `sleep` blocks
/// the evaluating thread, and the time cap (checked between operations) cannot stop a
/// function while it runs. The engine replaces each with one that fails, and a rule
/// file calling one by name is refused when it is loaded (`unavailable_call`).
pub const UNAVAILABLE: &[(&str, &str)] = &[("sleep", "a rule must not wait")];

/// What a rule asked for in one evaluation, in the order it asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Collected {
    Alert { severity: Severity, summary: String },
    Kill { reason: String },
    Restart,
    Checkpoint { label: String },
}

thread_local! {
    // Rhai calls registered functions on the evaluating thread, so a thread-local is the
    // simplest way for `alert()` and friends to reach the evaluation that called them
    // without making the (shared, Send + Sync) engine stateful.
    static COLLECTED: RefCell<Vec<Collected>> = const { RefCell::new(Vec::new()) };
    static DEADLINE: RefCell<Option<Instant>> = const { RefCell::new(None) };
    static PRINTED_LINES: Cell<u32> = const { Cell::new(0) };
}

fn collect(action: Collected) {
    COLLECTED.with(|c| c.borrow_mut().push(action));
}

/// Starts collecting actions for one evaluation on this thread.
pub(crate) fn begin_evaluation() {
    COLLECTED.with(|c| c.borrow_mut().clear());
    DEADLINE.with(|d| *d.borrow_mut() = Some(Instant::now() + MAX_EVAL_TIME));
    PRINTED_LINES.set(0);
}

/// The actions collected since [`begin_evaluation`].
pub(crate) fn end_evaluation() -> Vec<Collected> {
    DEADLINE.with(|d| *d.borrow_mut() = None);
    COLLECTED.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

type FnResult<T> = Result<T, Box<EvalAltResult>>;

fn runtime_error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), Position::NONE))
}

fn severity(text: &str) -> FnResult<Severity> {
    match text.to_ascii_lowercase().as_str() {
        "info" => Ok(Severity::Info),
        "warning" | "warn" => Ok(Severity::Warning),
        "critical" | "crit" => Ok(Severity::Critical),
        other => Err(runtime_error(format!(
            "alert: unknown severity {other:?} (use \"info\", \"warning\" or \"critical\")"
        ))),
    }
}

fn scaled_int(n: INT, factor: INT) -> FnResult<INT> {
    n.checked_mul(factor)
        .ok_or_else(|| runtime_error(format!("{n} × {factor} overflows")))
}

fn scaled_float(n: FLOAT, factor: INT) -> INT {
    // Saturating: a rule asking for gib(1e30) means "never", not an error.
    (n * factor as FLOAT) as INT
}

/// The engine every rule is compiled and evaluated with.
pub fn engine() -> Engine {
    // `new_raw` leaves out the file module resolver and stdout printing that `new` adds;
    // the standard package is arithmetic, strings, arrays, maps and math only.
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    // Rejected at compile time, so `drover rules check` names the line.
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.disable_symbol("export");

    engine.set_max_operations(MAX_OPERATIONS);
    engine.set_max_call_levels(MAX_CALL_LEVELS);
    engine.set_max_string_size(MAX_STRING_SIZE);
    engine.set_max_array_size(MAX_ARRAY_SIZE);
    engine.set_max_map_size(MAX_MAP_SIZE);
    engine.set_max_expr_depths(MAX_EXPR_DEPTH, MAX_FN_EXPR_DEPTH);
    engine.on_progress(|_| {
        let late = DEADLINE.with(|d| d.borrow().is_some_and(|at| Instant::now() > at));
        late.then(|| Dynamic::from(format!("took longer than {MAX_EVAL_TIME:?}")))
    });
    // A misspelt variable is a compile error, not a silent `()` at run time.
    engine.set_strict_variables(true);
    engine.on_print(|text| {
        if may_print() {
            tracing::info!(drover_event = "rule-print", "rule: {text}")
        }
    });
    engine.on_debug(|text, source, pos| {
        if may_print() {
            tracing::debug!(drover_event = "rule-print", "rule {source:?} {pos}: {text}")
        }
    });

    register_unavailable(&mut engine);
    register_helpers(&mut engine);
    register_actions(&mut engine);
    engine
}

/// Counts a printed line against [`MAX_PRINTED_LINES`]; says once when the rest are dropped.
fn may_print() -> bool {
    let printed = PRINTED_LINES.get();
    PRINTED_LINES.set(printed.saturating_add(1));
    if printed == MAX_PRINTED_LINES {
        tracing::info!(
            drover_event = "rule-print",
            "rule: more than {MAX_PRINTED_LINES} lines printed in one evaluation; the rest are dropped"
        );
    }
    printed < MAX_PRINTED_LINES
}

/// The engine's own functions are found before the standard package's, so these replace
/// the package's: a call that escapes [`unavailable_call`] (through `Fn("sleep")`, say)
/// fails at once.
fn register_unavailable(engine: &mut Engine) {
    for (name, why) in UNAVAILABLE {
        let message = format!("{name} is not available in rules ({why})");
        let refuse = move || -> FnResult<()> { Err(runtime_error(message.clone())) };
        let (int, float) = (refuse.clone(), refuse);
        engine.register_fn(*name, move |_: INT| int());
        engine.register_fn(*name, move |_: FLOAT| float());
    }
}

/// The first call in `ast` of a function in [`UNAVAILABLE`], with where and why; checked
/// when a rule is loaded, so the file is refused with the call's position.
pub(crate) fn unavailable_call(ast: &AST) -> Option<(Position, String)> {
    let mut found = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let call = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(call, pos) | Expr::MethodCall(call, pos)))
            | Some(ASTNode::Stmt(Stmt::FnCall(call, pos))) => Some((call, *pos)),
            _ => None,
        };
        if let Some((call, pos)) = call
            && let Some((name, why)) = UNAVAILABLE.iter().find(|(n, _)| call.name == *n)
        {
            found = Some((pos, format!("{name} is not available in rules ({why})")));
            return false;
        }
        true
    });
    found
}

fn register_helpers(engine: &mut Engine) {
    const KIB: INT = 1024;
    engine.register_fn("kib", |n: INT| scaled_int(n, KIB));
    engine.register_fn("mib", |n: INT| scaled_int(n, KIB * KIB));
    engine.register_fn("gib", |n: INT| scaled_int(n, KIB * KIB * KIB));
    engine.register_fn("kib", |n: FLOAT| scaled_float(n, KIB));
    engine.register_fn("mib", |n: FLOAT| scaled_float(n, KIB * KIB));
    engine.register_fn("gib", |n: FLOAT| scaled_float(n, KIB * KIB * KIB));
    // Durations are seconds, like `idle_secs` and `step_elapsed_secs`.
    engine.register_fn("seconds", |n: INT| n);
    engine.register_fn("minutes", |n: INT| scaled_int(n, 60));
    engine.register_fn("hours", |n: INT| scaled_int(n, 3600));
    engine.register_fn("seconds", |n: FLOAT| n);
    engine.register_fn("minutes", |n: FLOAT| n * 60.0);
    engine.register_fn("hours", |n: FLOAT| n * 3600.0);
    // `has(x)`: whether a value is known, so rules read `if has(memory_bytes) && …`.
    engine.register_fn("has", |v: Dynamic| !v.is_unit());
}

fn register_actions(engine: &mut Engine) {
    engine.register_fn("alert", |sev: &str, summary: &str| -> FnResult<()> {
        collect(Collected::Alert {
            severity: severity(sev)?,
            summary: summary.to_owned(),
        });
        Ok(())
    });
    engine.register_fn("alert", |summary: &str| {
        collect(Collected::Alert {
            severity: Severity::Warning,
            summary: summary.to_owned(),
        })
    });
    engine.register_fn("kill", |reason: &str| {
        collect(Collected::Kill {
            reason: reason.to_owned(),
        })
    });
    engine.register_fn("restart", || collect(Collected::Restart));
    engine.register_fn("checkpoint", |label: &str| {
        collect(Collected::Checkpoint {
            label: label.to_owned(),
        })
    });
    engine.register_fn("checkpoint", || {
        collect(Collected::Checkpoint {
            label: String::new(),
        })
    });
}
