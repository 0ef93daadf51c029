//! The D-Bus door: `org.drover.Drover1.Manager` at `/org/drover/Drover1`. Each method
//! learns its caller from the bus (the sender's uid, never the message body), decodes its
//! arguments and `a{sv}` options into the operation's typed request, calls [`Ops`], and
//! encodes the result as JSON. The client proxy (`DroverProxy`, which the CLI uses) is
//! generated from this same definition.

use std::collections::HashMap;
use std::time::Duration;

use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedVariant, Variant, interface};

use super::OBJECT_PATH;
use crate::model::EngineEvent;
use crate::ops::types::{
    CheckpointArgs, CriticalArgs, HistoryArgs, KillArgs, LogsArgs, RaiseAlertArgs, RestartArgs,
    RollbackArgs, RunArgs, SilenceArgs, TokenArgs,
};
use crate::ops::{Caller, Channel, ErrorKind, Ops, OpsError};
use crate::quantity::{QUOTED_MAX, truncated};

/// Errors callers see, named `org.drover.Drover1.Error.*` (see [`ErrorKind`]).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.drover.Drover1.Error")]
pub enum ApiError {
    #[zbus(error)]
    ZBus(zbus::Error),
    PermissionDenied(String),
    InvalidArgument(String),
    NoSuchRun(String),
    InvalidState(String),
    ConfirmationRequired(String),
    RequirementsUnmet(String),
    CorruptCheckpoint(String),
    InvalidConfig(String),
    Unauthenticated(String),
    NoSuchToken(String),
    Failed(String),
}

impl From<OpsError> for ApiError {
    fn from(e: OpsError) -> ApiError {
        let message = e.to_string();
        match e.kind() {
            ErrorKind::PermissionDenied => ApiError::PermissionDenied(message),
            ErrorKind::InvalidArgument => ApiError::InvalidArgument(message),
            ErrorKind::NoSuchRun => ApiError::NoSuchRun(message),
            ErrorKind::InvalidState => ApiError::InvalidState(message),
            ErrorKind::ConfirmationRequired => ApiError::ConfirmationRequired(message),
            ErrorKind::RequirementsUnmet => ApiError::RequirementsUnmet(message),
            ErrorKind::CorruptCheckpoint => ApiError::CorruptCheckpoint(message),
            ErrorKind::InvalidConfig => ApiError::InvalidConfig(message),
            ErrorKind::Unauthenticated => ApiError::Unauthenticated(message),
            ErrorKind::NoSuchToken => ApiError::NoSuchToken(message),
            ErrorKind::Failed => ApiError::Failed(message),
        }
    }
}

pub struct Manager {
    ops: Ops,
}

impl Manager {
    /// The sender of the call, as the bus knows it.
    async fn caller(&self, conn: &Connection, hdr: &Header<'_>) -> Result<Caller, ApiError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| ApiError::PermissionDenied("the call has no sender".into()))?;
        let uid = DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| ApiError::PermissionDenied(format!("cannot identify the caller: {e}")))?;
        Ok(self.ops.user(uid, Channel::Dbus))
    }
}

/// The largest reply sent: half the 32 MiB a message may carry on a default bus. A
/// reply beyond what the bus accepts would make the bus drop the agent's connection, and
/// its name with it.
const MAX_REPLY: usize = 16 << 20;

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, ApiError> {
    let json = serde_json::to_string(value).map_err(|e| ApiError::Failed(e.to_string()))?;
    if json.len() > MAX_REPLY {
        return Err(ApiError::Failed(format!(
            "the reply would be {} bytes, more than the {MAX_REPLY} a reply may carry: ask for less (one run, a shorter window)",
            json.len()
        )));
    }
    Ok(json)
}

fn critical_args(run: &str, label: &str) -> CriticalArgs {
    CriticalArgs {
        run: run.to_owned(),
        label: label.to_owned(),
    }
}

/// An optional string argument: blank means "not given".
fn given(text: &str) -> Option<&str> {
    Some(text).filter(|t| !t.trim().is_empty())
}

#[interface(
    name = "org.drover.Drover1.Manager",
    proxy(
        default_service = "org.drover.Drover1",
        default_path = "/org/drover/Drover1",
        async_name = "DroverProxy"
    )
)]
impl Manager {
    /// Starts a run of the workflow file (an absolute path) and returns its id.
    async fn run(
        &self,
        workflow_path: &str,
        params: HashMap<String, String>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        let args = RunArgs {
            workflow_path: workflow_path.to_owned(),
            params: params.into_iter().collect(),
        };
        Ok(self.ops.run(&caller, args).await?)
    }

    /// Every run, newest first, as a JSON array.
    async fn list(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.list(&caller)?)
    }

    /// One run with its steps, as a JSON object.
    async fn get(
        &self,
        run_id: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.get(&caller, run_id)?)
    }

    /// A chunk of one step attempt's log (`attempt` 0: the step's latest) from byte
    /// `offset`, at most `max` bytes (0: 256 KiB; at most 1 MiB): where it stands as JSON
    /// (`LogMeta`: next offset, size, whether more can come) and the bytes as they are.
    #[zbus(out_args("meta", "data"))]
    // The method's five arguments on the wire, and the header and connection zbus passes.
    #[allow(clippy::too_many_arguments)]
    async fn logs(
        &self,
        run: &str,
        step: &str,
        attempt: u32,
        offset: u64,
        max: u32,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(String, Vec<u8>), ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        let args = LogsArgs {
            run: run.to_owned(),
            step: step.to_owned(),
            attempt,
            offset,
            max,
        };
        let chunk = self.ops.logs(&caller, args).await?;
        // The bytes are bounded by the operation (1 MiB); the metadata by MAX_REPLY.
        Ok((to_json(&chunk.meta)?, chunk.data))
    }

    /// Kills a run: critical-section wait, SIGTERM to its scope, grace, SIGKILL, verify
    /// empty, cleanup, final snapshot. Returns the outcome (JSON) once the run is `killed`.
    /// Options: `grace` (a duration string such as "2s", or milliseconds as an integer),
    /// `confirm` (bool, needed for a protected workflow).
    async fn kill(
        &self,
        run: &str,
        reason: &str,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        let (grace, confirm) = kill_options(&options)?;
        let args = KillArgs {
            run: run.to_owned(),
            reason: reason.to_owned(),
            grace,
            confirm,
        };
        to_json(&self.ops.kill(&caller, args).await?)
    }

    /// Opens a critical span in a running run (a kill waits for it, up to `critical_max`).
    async fn enter_critical(
        &self,
        run: &str,
        label: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        Ok(self
            .ops
            .enter_critical(&caller, &critical_args(run, label))?)
    }

    async fn leave_critical(
        &self,
        run: &str,
        label: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        Ok(self
            .ops
            .leave_critical(&caller, &critical_args(run, label))?)
    }

    /// The kill audit trail (JSON array, oldest first) of one run, or of all runs for "".
    async fn audit(
        &self,
        run: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.kills(&caller, given(run))?)
    }

    /// Takes a checkpoint of a run now; returns it (JSON).
    async fn checkpoint(
        &self,
        run: &str,
        label: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(
            &self
                .ops
                .checkpoint(
                    &caller,
                    CheckpointArgs {
                        run: run.to_owned(),
                        label: label.to_owned(),
                    },
                )
                .await?,
        )
    }

    /// A run's checkpoints, oldest first (JSON array).
    async fn checkpoints(
        &self,
        run: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.checkpoints(&caller, run)?)
    }

    /// Restarts an ended run from a checkpoint. Options: `from` (the checkpoint number,
    /// u; default the latest), `confirm` (b, needed for a protected workflow). Returns the
    /// audit record (JSON) once the run is running again.
    async fn restart(
        &self,
        run: &str,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let (from, confirm) = action_options(&options, "Restart", true)?;
        let caller = self.caller(conn, &hdr).await?;
        let args = RestartArgs {
            run: run.to_owned(),
            from,
            confirm,
        };
        to_json(&self.ops.restart(&caller, args).await?)
    }

    /// Resets an ended run's worktree to checkpoint `to`, starting nothing. Options:
    /// `confirm` (b, needed for a protected workflow). Returns the audit record (JSON).
    async fn rollback(
        &self,
        run: &str,
        to: u32,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let (_, confirm) = action_options(&options, "Rollback", false)?;
        let caller = self.caller(conn, &hdr).await?;
        let args = RollbackArgs {
            run: run.to_owned(),
            to,
            confirm,
        };
        to_json(&self.ops.rollback(&caller, args).await?)
    }

    /// Restarts, rollbacks and checkpoints asked for (JSON array, oldest first), of one run
    /// or of all runs for "".
    async fn actions(
        &self,
        run: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.actions(&caller, given(run))?)
    }

    /// Per-day history (JSON `History`): runs, outcomes, durations, cost, failure
    /// classes, kills and restarts, of `workflow` ("" for all) over `since` (a duration
    /// such as "7d"; "" for 7 days).
    async fn history(
        &self,
        workflow: &str,
        since: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        let args = HistoryArgs {
            workflow: given(workflow).map(str::to_owned),
            since: history_since(since)?,
        };
        to_json(&self.ops.history(&caller, &args)?)
    }

    /// Firing alerts (every alert with `all`), newest first, as a JSON array.
    async fn alerts(
        &self,
        all: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.alerts(&caller, all)?)
    }

    /// Silences a rule or a run (`target`) for `duration` ("1h"): its alerts are stored
    /// but not sent until then. Operator; audited like an action, refusals included.
    /// Returns the silence (JSON).
    async fn silence(
        &self,
        target: &str,
        duration: &str,
        reason: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let duration = crate::quantity::parse_duration(duration)
            .map_err(|e| ApiError::InvalidArgument(format!("duration: {e}")))?;
        let caller = self.caller(conn, &hdr).await?;
        let args = SilenceArgs {
            target: target.to_owned(),
            duration,
            reason: reason.to_owned(),
        };
        to_json(&self.ops.silence(&caller, args)?)
    }

    /// Silences in force (every silence with `all`), newest first, as a JSON array.
    async fn silences(
        &self,
        all: bool,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.silences(&caller, all)?)
    }

    /// Raises an alert by hand (operators' scripts, tests): `run` may be "", `severity` is
    /// info, warning or critical. Admin. Returns the alert (JSON).
    async fn raise_alert(
        &self,
        rule: &str,
        run: &str,
        severity: &str,
        summary: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        let args = RaiseAlertArgs {
            run: given(run).map(str::to_owned),
            severity: crate::model::parse_severity(severity).ok_or_else(|| {
                ApiError::InvalidArgument(format!(
                    "severity {:?}: info, warning or critical",
                    truncated(severity, QUOTED_MAX)
                ))
            })?,
            rule: rule.to_owned(),
            summary: summary.to_owned(),
        };
        to_json(&self.ops.raise_alert(&caller, &args)?)
    }

    /// Resolves the firing alert with this key (`<rule>/<run>`). Admin. Returns the alert
    /// (JSON).
    async fn resolve_alert(
        &self,
        key: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.resolve_alert(&caller, key)?)
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
        to_json(&self.ops.reload(&caller)?)
    }

    /// A running run's live metrics and its recent samples (the last five minutes), as a
    /// JSON object: the fields of `RunMetrics` and `series`.
    async fn metrics(
        &self,
        run: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.metrics(&caller, run)?)
    }

    /// The latest metrics of every unfinished run, as a JSON array of `RunMetrics`.
    async fn top(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.top(&caller)?)
    }

    /// Creates a bearer token for the HTTP API, for the caller with at most their own
    /// `role` (viewer, operator or admin). Options: `user` (s, by name or uid: another
    /// user's token needs admin), `expires` (s, a duration such as "30d"). Returns
    /// `{token, record}` (JSON): the secret is in this reply and nowhere else.
    async fn create_token(
        &self,
        name: &str,
        role: &str,
        options: HashMap<String, OwnedVariant>,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let role = role.parse().map_err(|_| {
            ApiError::InvalidArgument(format!(
                "role {:?}: viewer, operator or admin",
                truncated(role, QUOTED_MAX)
            ))
        })?;
        let (user, expires) = token_options(&options)?;
        let caller = self.caller(conn, &hdr).await?;
        let args = TokenArgs {
            name: name.to_owned(),
            role,
            user,
            expires,
        };
        to_json(&self.ops.create_token(&caller, args)?)
    }

    /// The tokens, newest first (JSON array, no secrets): every one for an admin, the
    /// caller's own for anyone else.
    async fn tokens(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.tokens(&caller)?)
    }

    /// Revokes the live token `name` (its user may, and an admin). Returns it (JSON).
    async fn revoke_token(
        &self,
        name: &str,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, ApiError> {
        let caller = self.caller(conn, &hdr).await?;
        to_json(&self.ops.revoke_token(&caller, name)?)
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
                    crate::quantity::parse_duration(text.as_str())
                        .map_err(|e| ApiError::InvalidArgument(format!("option grace: {e}")))?,
                );
            }
            ("grace", Variant::U64(ms)) => {
                grace = Some(
                    crate::quantity::duration_from_millis(*ms)
                        .map_err(|e| ApiError::InvalidArgument(format!("option grace: {e}")))?,
                );
            }
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
                    "unknown option {:?}: Kill knows grace and confirm",
                    truncated(key, QUOTED_MAX)
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
                    "unknown option {:?}: {call} knows {known}",
                    truncated(key, QUOTED_MAX)
                )));
            }
        }
    }
    Ok((from, confirm))
}

/// Reads `CreateToken`'s options; an unknown key or a wrong type is refused by name.
fn token_options(
    options: &HashMap<String, OwnedVariant>,
) -> Result<(Option<String>, Option<Duration>), ApiError> {
    let mut user = None;
    let mut expires = None;
    for (key, value) in options {
        match (key.as_str(), &**value) {
            ("user", Variant::Str(name)) => user = given(name.as_str()).map(str::to_owned),
            ("expires", Variant::Str(text)) => {
                expires = given(text.as_str())
                    .map(crate::quantity::parse_duration)
                    .transpose()
                    .map_err(|e| ApiError::InvalidArgument(format!("option expires: {e}")))?;
            }
            ("user" | "expires", other) => {
                return Err(ApiError::InvalidArgument(format!(
                    "option {key} has the wrong type {}: a string (s)",
                    other.value_signature()
                )));
            }
            _ => {
                return Err(ApiError::InvalidArgument(format!(
                    "unknown option {:?}: CreateToken knows user and expires",
                    truncated(key, QUOTED_MAX)
                )));
            }
        }
    }
    Ok((user, expires))
}

/// A history window's length: `None` (the operation's default) when blank.
fn history_since(since: &str) -> Result<Option<Duration>, ApiError> {
    let Some(since) = given(since) else {
        return Ok(None);
    };
    crate::quantity::parse_duration(since)
        .map(Some)
        .map_err(|e| {
            ApiError::InvalidArgument(format!(
                "since {:?}: expected a duration such as 7d or 12h: {}",
                e.text.trim(),
                e.reason
            ))
        })
}

/// Serves the interface on `conn` and forwards the engine's run events as `RunChanged`.
pub async fn serve(conn: &Connection, ops: Ops) -> zbus::Result<()> {
    let mut events = ops.subscribe();
    conn.object_server()
        .at(OBJECT_PATH, Manager { ops })
        .await?;
    let emitter = SignalEmitter::new(conn, OBJECT_PATH)?.into_owned();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                // Step starts and ends are the event stream's (HTTP); the signal keeps to
                // run transitions.
                Ok(EngineEvent::Step(_)) => {}
                Ok(EngineEvent::Run(event)) => {
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
