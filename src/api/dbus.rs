//! The D-Bus service: `org.drover.Drover1.Manager` at `/org/drover/Drover1`. Each call is
//! authorised by the caller's uid (asked of the bus, never taken from the message body).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedVariant, Variant, interface};

use super::OBJECT_PATH;
use super::auth::{Authorizer, Caller, Role};
use crate::alerts::{Alerts, AlertsError, SilenceRequest};
use crate::engine::{ActionRequest, Engine, EngineError, KillRequest};
use crate::monitor::{self, Monitor};
use crate::reload::{ReloadError, Reloader, Requester};

/// Errors callers see, named `org.drover.Drover1.Error.*`.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.drover.Drover1.Error")]
pub enum ApiError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller lacks the role the call needs; the message names it.
    PermissionDenied(String),
    /// The request is malformed (bad workflow file, bad parameter); nothing was changed.
    InvalidArgument(String),
    NoSuchRun(String),
    /// The run is not in a state that allows the call (finished, already being killed).
    InvalidState(String),
    /// A protected workflow's kill needs `confirm=true`.
    ConfirmationRequired(String),
    /// A start or restart was refused: the message names each requirement not met.
    RequirementsUnmet(String),
    /// A checkpoint's ref, commit or state is missing or damaged; nothing was changed.
    CorruptCheckpoint(String),
    /// The config file does not validate; the running configuration stays in force.
    InvalidConfig(String),
    Failed(String),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match e {
            EngineError::Spec(_)
            | EngineError::InvalidParam(_)
            | EngineError::RelativePath(_)
            | EngineError::Worktree(_) => ApiError::InvalidArgument(e.to_string()),
            EngineError::NoSuchRun(_) => ApiError::NoSuchRun(e.to_string()),
            EngineError::AlreadyEnded { .. }
            | EngineError::KillInProgress(_)
            | EngineError::NotRunning { .. }
            | EngineError::NoCriticalSpan { .. }
            | EngineError::NotEnded { .. }
            | EngineError::NoWorktree { .. }
            | EngineError::NothingToRestart { .. } => ApiError::InvalidState(e.to_string()),
            EngineError::NoSuchCheckpoint { .. } => ApiError::InvalidArgument(e.to_string()),
            EngineError::RequirementsUnmet { .. } => ApiError::RequirementsUnmet(e.to_string()),
            EngineError::CorruptCheckpoint { .. } => ApiError::CorruptCheckpoint(e.to_string()),
            EngineError::Unconfirmed(_) => ApiError::ConfirmationRequired(e.to_string()),
            EngineError::GraceTooLong { .. } => ApiError::InvalidArgument(e.to_string()),
            _ => ApiError::Failed(e.to_string()),
        }
    }
}

impl From<ReloadError> for ApiError {
    fn from(e: ReloadError) -> ApiError {
        let message = format!("configuration not reloaded, the running one stays in force: {e}");
        match e {
            ReloadError::Config(_) => ApiError::InvalidConfig(message),
            ReloadError::Rules(_) | ReloadError::Compare(_) => ApiError::Failed(message),
        }
    }
}

impl From<AlertsError> for ApiError {
    fn from(e: AlertsError) -> ApiError {
        match e {
            AlertsError::InvalidArgument(_) | AlertsError::NoSuchAlert(_) => {
                ApiError::InvalidArgument(e.to_string())
            }
            _ => ApiError::Failed(e.to_string()),
        }
    }
}

pub struct Manager {
    engine: Engine,
    alerts: Alerts,
    auth: Arc<Authorizer>,
    monitor: Monitor,
    reloader: Arc<Reloader>,
}

impl Manager {
    pub fn new(
        engine: Engine,
        alerts: Alerts,
        auth: Arc<Authorizer>,
        monitor: Monitor,
        reloader: Arc<Reloader>,
    ) -> Manager {
        Manager {
            engine,
            alerts,
            auth,
            monitor,
            reloader,
        }
    }

    async fn caller(&self, conn: &Connection, hdr: &Header<'_>) -> Result<Caller, ApiError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| ApiError::PermissionDenied("the call has no sender".into()))?;
        let uid = DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| ApiError::PermissionDenied(format!("cannot identify the caller: {e}")))?;
        Ok(Caller::new(uid, "dbus"))
    }

    async fn authorise(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        needed: Role,
        action: &'static str,
    ) -> Result<Caller, ApiError> {
        let caller = self.caller(conn, hdr).await?;
        match self.auth.require(&caller, needed, action) {
            Ok(_) => Ok(caller),
            Err(denied) => {
                tracing::warn!(drover_event = "denied", "refused: {denied}");
                Err(ApiError::PermissionDenied(denied.to_string()))
            }
        }
    }
}

impl Manager {
    /// The caller's request for `action` on `run`, if their role allows it (operator); a
    /// refusal is audited.
    async fn action_request(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        run: String,
        action: &'static str,
        confirm: bool,
    ) -> Result<ActionRequest, ApiError> {
        let caller = self.caller(conn, hdr).await?;
        let request = ActionRequest {
            run,
            requested_by: caller.to_string(),
            uid: Some(caller.uid),
            role: self.auth.role_of(&caller).map(|r| r.to_string()),
            channel: caller.channel.to_owned(),
            confirm,
        };
        if let Err(denied) = self.auth.require(&caller, Role::Operator, action) {
            self.engine
                .refuse_action(&request, action, &denied.to_string())?;
            return Err(ApiError::PermissionDenied(denied.to_string()));
        }
        Ok(request)
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    serde_json::to_string(value).map_err(|e| ApiError::Failed(e.to_string()))
}

#[interface(name = "org.drover.Drover1.Manager")]
impl Manager {
    /// Starts a run of the workflow file (an absolute path) and returns its id.
    async fn run(
        &self,
        workflow_path: String,
        params: HashMap<String, String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self
            .authorise(conn, &hdr, Role::Operator, "start a run")
            .await?;
        let params: BTreeMap<String, String> = params.into_iter().collect();
        Ok(self
            .engine
            .submit(&workflow_path, params, &caller.to_string())?)
    }

    /// Every run, newest first, as a JSON array.
    async fn list(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "list runs")
            .await?;
        to_json(&self.engine.runs()?)
    }

    /// One run with its steps, as a JSON object.
    async fn get(
        &self,
        run_id: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "read a run")
            .await?;
        to_json(&self.engine.run(&run_id)?)
    }

    /// Kills a run: critical-section wait, SIGTERM to its scope, grace, SIGKILL, verify
    /// empty, cleanup, final snapshot. Returns the outcome (JSON) once the run is `killed`.
    /// Options: `grace` (a duration string such as "2s", or milliseconds as an integer),
    /// `confirm` (bool, needed for a protected workflow).
    async fn kill(
        &self,
        run: String,
        reason: String,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        let (grace, confirm) = kill_options(&options)?;
        let held = self.auth.role_of(&caller);
        let request = KillRequest {
            run,
            reason: if reason.trim().is_empty() {
                "no reason given".to_owned()
            } else {
                reason
            },
            requested_by: caller.to_string(),
            uid: Some(caller.uid),
            role: held.map(|r| r.to_string()),
            channel: caller.channel.to_owned(),
            grace,
            confirm,
        };
        if let Err(denied) = self.auth.require(&caller, Role::Operator, "kill a run") {
            self.engine.refuse_kill(&request, &denied.to_string())?;
            return Err(ApiError::PermissionDenied(denied.to_string()));
        }
        to_json(&self.engine.kill(request).await?)
    }

    /// Opens a critical span in a running run (a kill waits for it, up to `critical_max`).
    async fn enter_critical(
        &self,
        run: String,
        label: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let caller = self
            .authorise(conn, &hdr, Role::Operator, "open a critical section")
            .await?;
        Ok(self
            .engine
            .enter_critical(&run, &label, &caller.to_string())?)
    }

    async fn leave_critical(
        &self,
        run: String,
        label: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        self.authorise(conn, &hdr, Role::Operator, "close a critical section")
            .await?;
        Ok(self.engine.leave_critical(&run, &label)?)
    }

    /// The kill audit trail (JSON array, oldest first) of one run, or of all runs for "".
    async fn audit(
        &self,
        run: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "read the audit trail")
            .await?;
        to_json(
            &self
                .engine
                .kills(Some(run.as_str()).filter(|r| !r.is_empty()))?,
        )
    }

    /// Takes a checkpoint of a run now; returns it (JSON).
    async fn checkpoint(
        &self,
        run: String,
        label: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let request = self
            .action_request(conn, &hdr, run, "checkpoint", false)
            .await?;
        let label = Some(label.as_str()).filter(|l| !l.trim().is_empty());
        to_json(&self.engine.checkpoint(&request, label).await?)
    }

    /// A run's checkpoints, oldest first (JSON array).
    async fn checkpoints(
        &self,
        run: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "list checkpoints")
            .await?;
        to_json(&self.engine.checkpoints(&run)?)
    }

    /// Restarts an ended run from a checkpoint. Options: `from` (the checkpoint number,
    /// u; default the latest), `confirm` (b, needed for a protected workflow). Returns the
    /// audit record (JSON) once the run is running again.
    async fn restart(
        &self,
        run: String,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let (from, confirm) = action_options(&options, "Restart", true)?;
        let request = self
            .action_request(conn, &hdr, run, "restart", confirm)
            .await?;
        to_json(&self.engine.restart(&request, from).await?)
    }

    /// Resets an ended run's worktree to checkpoint `to`, starting nothing. Options:
    /// `confirm` (b, needed for a protected workflow). Returns the audit record (JSON).
    async fn rollback(
        &self,
        run: String,
        to: u32,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let (_, confirm) = action_options(&options, "Rollback", false)?;
        let request = self
            .action_request(conn, &hdr, run, "rollback", confirm)
            .await?;
        to_json(&self.engine.rollback(&request, to).await?)
    }

    /// Restarts, rollbacks and checkpoints asked for (JSON array, oldest first), of one run
    /// or of all runs for "".
    async fn actions(
        &self,
        run: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "read the audit trail")
            .await?;
        to_json(
            &self
                .engine
                .actions(Some(run.as_str()).filter(|r| !r.is_empty()))?,
        )
    }

    /// Per-day history (JSON `History`): runs, outcomes, durations, cost, failure
    /// classes, kills and restarts, of `workflow` ("" for all) over `since` (a duration
    /// such as "7d"; "" for 7 days).
    async fn history(
        &self,
        workflow: String,
        since: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "read the history")
            .await?;
        let since = history_since(&since)?;
        let workflow = Some(workflow.as_str()).filter(|w| !w.is_empty());
        to_json(&self.engine.history(workflow, since)?)
    }

    /// Firing alerts (every alert with `all`), newest first, as a JSON array.
    async fn alerts(
        &self,
        all: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "list alerts")
            .await?;
        to_json(&self.alerts.alerts(all)?)
    }

    /// Silences a rule or a run (`target`) for `duration` ("1h"): its alerts are stored
    /// but not sent until then. Operator; audited like an action, refusals included.
    /// Returns the silence (JSON).
    async fn silence(
        &self,
        target: String,
        duration: String,
        reason: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let duration = crate::spec::parse_duration(&duration)
            .map_err(|e| ApiError::InvalidArgument(format!("duration: {e}")))?;
        let request = self
            .action_request(conn, &hdr, target, "silence", false)
            .await?;
        to_json(&self.alerts.silence(&SilenceRequest {
            target: request.run,
            duration,
            reason,
            requested_by: request.requested_by,
            uid: request.uid,
            role: request.role,
            channel: request.channel,
        })?)
    }

    /// Silences in force (every silence with `all`), newest first, as a JSON array.
    async fn silences(
        &self,
        all: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "list silences")
            .await?;
        to_json(&self.alerts.silences(all)?)
    }

    /// Raises an alert by hand (operators' scripts, tests): `run` may be "", `severity` is
    /// info, warning or critical. Admin. Returns the alert (JSON).
    async fn raise_alert(
        &self,
        rule: String,
        run: String,
        severity: String,
        summary: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Admin, "raise an alert")
            .await?;
        let severity = crate::model::parse_severity(&severity).ok_or_else(|| {
            ApiError::InvalidArgument(format!("severity {severity:?}: info, warning or critical"))
        })?;
        let run = Some(run.as_str()).filter(|r| !r.is_empty());
        to_json(&self.alerts.raise(&rule, run, severity, &summary)?.alert)
    }

    /// Resolves the firing alert with this key (`<rule>/<run>`). Admin. Returns the alert
    /// (JSON).
    async fn resolve_alert(
        &self,
        key: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Admin, "resolve an alert")
            .await?;
        to_json(&self.alerts.resolve(&key)?.alert)
    }

    /// Re-reads the agent's config file and puts it in force where that can be done live
    /// (`[auth]`, `[rules]`); an invalid file changes nothing and is the error. Admin;
    /// audited, refusals included. Returns what changed (JSON), naming the changed
    /// settings that take effect only after a restart.
    async fn reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        let by = Requester {
            requested_by: caller.to_string(),
            uid: Some(caller.uid),
            role: self.auth.role_of(&caller).map(|r| r.to_string()),
            channel: caller.channel.to_owned(),
        };
        if let Err(denied) = self
            .auth
            .require(&caller, Role::Admin, "reload the configuration")
        {
            self.reloader.refuse(&by, &denied.to_string());
            return Err(ApiError::PermissionDenied(denied.to_string()));
        }
        to_json(&self.reloader.reload(&by)?)
    }

    /// A running run's live metrics and its recent samples (the last five minutes), as a
    /// JSON object: the fields of `RunMetrics` and `series`.
    async fn metrics(
        &self,
        run: String,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "read metrics")
            .await?;
        // The engine's word on the state: the monitor forgets an ended run only at its
        // next tick.
        let record = self.engine.run(&run)?;
        if !record.state.is_terminal()
            && let Some(report) = self.monitor.report(&run, monitor::REPORT_SAMPLES)
        {
            return to_json(&report);
        }
        Err(ApiError::InvalidState(format!(
            "run {run} is {}: live metrics exist only while a run is unfinished (and after its first sample)",
            record.state
        )))
    }

    /// The latest metrics of every unfinished run, as a JSON array of `RunMetrics`.
    async fn top(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        self.authorise(conn, &hdr, Role::Viewer, "read metrics")
            .await?;
        to_json(&self.monitor.all())
    }

    /// A run reached a new state (already recorded in the state DB).
    #[zbus(signal)]
    pub async fn run_changed(
        emitter: &SignalEmitter<'_>,
        run_id: &str,
        state: &str,
    ) -> zbus::Result<()>;
}

/// Reads `Kill`'s options; an unknown key or a wrong type is refused by name.
fn kill_options(
    options: &HashMap<String, OwnedVariant>,
) -> Result<(Option<Duration>, bool), ApiError> {
    let mut grace = None;
    let mut confirm = false;
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("grace", Variant::Str(text)) => {
                grace = Some(
                    crate::spec::parse_duration(text.as_str())
                        .map_err(|e| ApiError::InvalidArgument(format!("option grace: {e}")))?,
                );
            }
            ("grace", Variant::U64(ms)) => grace = Some(Duration::from_millis(*ms)),
            ("grace", Variant::U32(ms)) => grace = Some(Duration::from_millis(u64::from(*ms))),
            ("confirm", Variant::Bool(yes)) => confirm = *yes,
            ("grace" | "confirm", other) => {
                return Err(ApiError::InvalidArgument(format!(
                    "option {key} has the wrong type {}: grace is a string (\"2s\") or milliseconds (t), confirm is a boolean (b)",
                    other.value_signature()
                )));
            }
            _ => {
                return Err(ApiError::InvalidArgument(format!(
                    "unknown option {key:?}: Kill knows grace and confirm"
                )));
            }
        }
    }
    Ok((grace, confirm))
}

/// Reads `Restart`'s and `Rollback`'s options (`from` only where `takes_from`); an unknown
/// key or a wrong type is refused by name.
fn action_options(
    options: &HashMap<String, OwnedVariant>,
    call: &str,
    takes_from: bool,
) -> Result<(Option<u32>, bool), ApiError> {
    let mut from = None;
    let mut confirm = false;
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("from", Variant::U32(n)) if takes_from => from = Some(*n),
            ("from", Variant::Str(s)) if takes_from && s.as_str() == "latest" => from = None,
            ("confirm", Variant::Bool(yes)) => confirm = *yes,
            ("from", other) if takes_from => {
                return Err(ApiError::InvalidArgument(format!(
                    "option from has the wrong type {}: a checkpoint number (u) or \"latest\" (s)",
                    other.value_signature()
                )));
            }
            ("confirm", other) => {
                return Err(ApiError::InvalidArgument(format!(
                    "option confirm has the wrong type {}: a boolean (b)",
                    other.value_signature()
                )));
            }
            _ => {
                let known = if takes_from {
                    "from and confirm"
                } else {
                    "confirm"
                };
                return Err(ApiError::InvalidArgument(format!(
                    "unknown option {key:?}: {call} knows {known}"
                )));
            }
        }
    }
    Ok((from, confirm))
}

/// The start of a history window: `since` ago (a duration, "7d" when empty).
fn history_since(since: &str) -> Result<crate::model::Timestamp, ApiError> {
    let since = if since.trim().is_empty() {
        "7d"
    } else {
        since.trim()
    };
    let window = humantime::parse_duration(since).map_err(|e| {
        ApiError::InvalidArgument(format!(
            "since {since:?}: expected a duration such as 7d or 12h: {e}"
        ))
    })?;
    let millis = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    Ok(crate::model::Timestamp(
        crate::model::Timestamp::now().0.saturating_sub(millis),
    ))
}

/// Serves the interface on `conn` and forwards the engine's run events as `RunChanged`.
pub async fn serve(
    conn: &Connection,
    engine: Engine,
    alerts: Alerts,
    auth: Arc<Authorizer>,
    monitor: Monitor,
    reloader: Arc<Reloader>,
) -> zbus::Result<()> {
    let mut events = engine.subscribe();
    conn.object_server()
        .at(
            OBJECT_PATH,
            Manager::new(engine, alerts, auth, monitor, reloader),
        )
        .await?;
    let emitter = SignalEmitter::new(conn, OBJECT_PATH)?.into_owned();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Err(e) =
                        Manager::run_changed(&emitter, &event.run, event.state.as_str()).await
                    {
                        tracing::warn!("cannot emit RunChanged: {e}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("{n} RunChanged signals were dropped: the bus is too slow");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(())
}
