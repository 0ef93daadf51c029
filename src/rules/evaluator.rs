//! Where rules run: each rule on a thread of its own, which a tick waits for at most
//! [`MAX_WAIT`] per run. The sandbox's time cap is checked between a rule's operations,
//! so a function that blocks would hold its evaluation past the cap; here it holds only
//! that rule's thread: the tick reports the evaluation as timed out and goes on without
//! it, and the rule is skipped (and said to be) until the evaluation returns. One thread
//! per rule at most, however long one stays stuck.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rhai::Engine;

use super::{Rule, RuleError, RunView, run_rule, sandbox::Collected, sandbox::MAX_EVAL_TIME};

/// How long a tick waits for one rule's evaluation of one run: the time cap, plus time
/// for an evaluation past it to notice at its next operation and return.
pub const MAX_WAIT: Duration = MAX_EVAL_TIME.saturating_add(Duration::from_millis(100));

/// One rule's evaluation of one run, or why there was none.
#[derive(Debug)]
pub(crate) struct Evaluation {
    /// Indexes into the rules and the views given to [`Evaluators::evaluate`].
    pub rule: usize,
    pub view: usize,
    /// How long it took, or was waited for; `None`: skipped, not evaluated.
    pub micros: Option<u64>,
    pub result: Result<Vec<Collected>, Box<RuleError>>,
}

/// The rules' evaluation threads, by rule name.
pub(crate) struct Evaluators {
    engine: Arc<Engine>,
    workers: BTreeMap<String, Worker>,
    done_tx: mpsc::Sender<Done>,
    done: mpsc::Receiver<Done>,
}

struct Worker {
    jobs: mpsc::Sender<Job>,
    /// The evaluation the worker was left behind in: which run, and since when.
    stuck: Option<(String, Instant)>,
}

/// Evaluate `rule` on `views[view]`.
struct Job {
    name: String,
    rule: Rule,
    views: Arc<[RunView]>,
    view: usize,
}

struct Done {
    name: String,
    view: usize,
    micros: u64,
    result: Result<Vec<Collected>, Box<RuleError>>,
}

/// A job sent and not answered yet.
struct InFlight {
    rule: usize,
    view: usize,
    sent: Instant,
}

impl Evaluators {
    pub fn new(engine: Arc<Engine>) -> Evaluators {
        let (done_tx, done) = mpsc::channel();
        Evaluators {
            engine,
            workers: BTreeMap::new(),
            done_tx,
            done,
        }
    }

    /// Evaluates every rule on every view, the rules side by side and each rule's views
    /// in turn, and returns as the last one ends or is given up on (in no set order).
    pub fn evaluate(&mut self, rules: &[(String, Rule)], views: &[RunView]) -> Vec<Evaluation> {
        while let Ok(late) = self.done.try_recv() {
            self.returned(&late.name);
        }
        // Threads of rules gone end, unless stuck: those stay counted until they return.
        self.workers
            .retain(|name, w| w.stuck.is_some() || rules.iter().any(|(n, _)| n == name));
        let views: Arc<[RunView]> = views.into();
        let mut evaluations = Vec::new();
        let mut in_flight: BTreeMap<&str, InFlight> = BTreeMap::new();
        if views.is_empty() {
            return evaluations;
        }
        for (rule, (name, _)) in rules.iter().enumerate() {
            match self.send(rules, rule, &views, 0) {
                Ok(sent) => {
                    in_flight.insert(name, sent);
                }
                Err(why) => skip_rest(rules, rule, &views, 0, &why, &mut evaluations),
            }
        }
        while let Some(deadline) = in_flight.values().map(|f| f.sent + MAX_WAIT).min() {
            match self
                .done
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(done) => {
                    let Some(flight) = in_flight
                        .remove(done.name.as_str())
                        .filter(|f| f.view == done.view)
                    else {
                        // An evaluation given up on, returning at last.
                        self.returned(&done.name);
                        continue;
                    };
                    evaluations.push(Evaluation {
                        rule: flight.rule,
                        view: flight.view,
                        micros: Some(done.micros),
                        result: done.result,
                    });
                    let next = flight.view + 1;
                    if next < views.len() {
                        match self.send(rules, flight.rule, &views, next) {
                            Ok(sent) => {
                                in_flight.insert(&rules[flight.rule].0, sent);
                            }
                            Err(why) => {
                                skip_rest(rules, flight.rule, &views, next, &why, &mut evaluations)
                            }
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let late: Vec<&str> = in_flight
                        .iter()
                        .filter(|(_, f)| now >= f.sent + MAX_WAIT)
                        .map(|(name, _)| *name)
                        .collect();
                    for name in late {
                        let flight = in_flight.remove(name).expect("listed above");
                        let run = views[flight.view].run.clone();
                        if let Some(worker) = self.workers.get_mut(name) {
                            worker.stuck = Some((run.clone(), flight.sent));
                        }
                        let (rule_name, rule) = &rules[flight.rule];
                        evaluations.push(Evaluation {
                            rule: flight.rule,
                            view: flight.view,
                            micros: Some(now.duration_since(flight.sent).as_micros() as u64),
                            result: Err(error(
                                rule_name,
                                rule,
                                &run,
                                format!(
                                    "did not return within {MAX_WAIT:?} (blocked in a function?); \
                                     left running, and the rule is skipped until it returns"
                                ),
                                true,
                            )),
                        });
                        let why = format!("its evaluation of run {run} has not returned");
                        skip_rest(
                            rules,
                            flight.rule,
                            &views,
                            flight.view + 1,
                            &why,
                            &mut evaluations,
                        );
                    }
                }
                // `self` holds a sender: not while it lives.
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        evaluations
    }

    /// Sends `rules[rule]` on `views[view]` to the rule's thread (started if it has none);
    /// or says why not.
    fn send(
        &mut self,
        rules: &[(String, Rule)],
        rule: usize,
        views: &Arc<[RunView]>,
        view: usize,
    ) -> Result<InFlight, String> {
        let (name, compiled) = &rules[rule];
        if !self.workers.contains_key(name) {
            let worker = self.spawn(name)?;
            self.workers.insert(name.clone(), worker);
        }
        let worker = self.workers.get_mut(name).expect("inserted above");
        if let Some((run, since)) = &worker.stuck {
            return Err(format!(
                "its evaluation of run {run} has not returned for {}s",
                since.elapsed().as_secs()
            ));
        }
        let job = Job {
            name: name.clone(),
            rule: compiled.clone(),
            views: views.clone(),
            view,
        };
        if worker.jobs.send(job).is_err() {
            // Its thread is gone; the next tick starts another.
            self.workers.remove(name);
            return Err("its evaluation thread ended".to_owned());
        }
        Ok(InFlight {
            rule,
            view,
            sent: Instant::now(),
        })
    }

    fn spawn(&self, name: &str) -> Result<Worker, String> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let engine = self.engine.clone();
        let done = self.done_tx.clone();
        std::thread::Builder::new()
            .name(format!("rule {name}"))
            .spawn(move || work(&engine, inbox, done))
            .map_err(|e| format!("cannot start its evaluation thread: {e}"))?;
        Ok(Worker { jobs, stuck: None })
    }

    /// The rule's thread finished the evaluation it was left behind in: it may run again.
    fn returned(&mut self, name: &str) {
        if let Some(worker) = self.workers.get_mut(name) {
            worker.stuck = None;
        }
    }
}

/// A rule's thread: evaluates what it is sent, one at a time, until its sender is dropped
/// (the rule is gone) or the evaluators are.
fn work(engine: &Engine, inbox: mpsc::Receiver<Job>, done: mpsc::Sender<Done>) {
    for job in inbox {
        let view = &job.views[job.view];
        let started = Instant::now();
        // A panic in Rhai fails this evaluation, not the rule's thread for good.
        let result = catch_unwind(AssertUnwindSafe(|| {
            run_rule(engine, &job.name, &job.rule, view)
        }))
        .unwrap_or_else(|_| {
            Err(error(
                &job.name,
                &job.rule,
                &view.run,
                "the evaluation panicked".to_owned(),
                false,
            ))
        });
        let answer = Done {
            name: job.name,
            view: job.view,
            micros: started.elapsed().as_micros() as u64,
            result,
        };
        if done.send(answer).is_err() {
            return;
        }
    }
}

/// Skipped evaluations of `rules[rule]` on `views[from..]`, saying why.
fn skip_rest(
    rules: &[(String, Rule)],
    rule: usize,
    views: &[RunView],
    from: usize,
    why: &str,
    evaluations: &mut Vec<Evaluation>,
) {
    let (name, compiled) = &rules[rule];
    for (view, run) in views.iter().enumerate().skip(from) {
        evaluations.push(Evaluation {
            rule,
            view,
            micros: None,
            result: Err(error(
                name,
                compiled,
                &run.run,
                format!("skipped: {why}"),
                true,
            )),
        });
    }
}

/// An error of `rule` on `run` that has no position in the file.
fn error(name: &str, rule: &Rule, run: &str, message: String, limit: bool) -> Box<RuleError> {
    Box::new(RuleError {
        rule: name.to_owned(),
        run: run.to_owned(),
        path: rule.path.clone(),
        line: None,
        column: None,
        message,
        limit,
    })
}
