//! The D-Bus service: `org.drover.Drover1.Manager` at `/org/drover/Drover1`. Each call is
//! authorised by the caller's uid (asked of the bus, never taken from the message body).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use zbus::fdo::DBusProxy;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};

use super::OBJECT_PATH;
use super::auth::{Authorizer, Caller, Role};
use crate::engine::{Engine, EngineError};

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
            _ => ApiError::Failed(e.to_string()),
        }
    }
}

pub struct Manager {
    engine: Engine,
    auth: Arc<Authorizer>,
}

impl Manager {
    pub fn new(engine: Engine, auth: Arc<Authorizer>) -> Manager {
        Manager { engine, auth }
    }

    async fn authorise(
        &self,
        conn: &Connection,
        hdr: &Header<'_>,
        needed: Role,
        action: &'static str,
    ) -> Result<Caller, ApiError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| ApiError::PermissionDenied("the call has no sender".into()))?;
        let uid = DBusProxy::new(conn)
            .await?
            .get_connection_unix_user(sender.clone().into())
            .await
            .map_err(|e| ApiError::PermissionDenied(format!("cannot identify the caller: {e}")))?;
        let caller = Caller::new(uid, "dbus");
        match self.auth.require(&caller, needed, action) {
            Ok(_) => Ok(caller),
            Err(denied) => {
                tracing::warn!(drover_event = "denied", "refused: {denied}");
                Err(ApiError::PermissionDenied(denied.to_string()))
            }
        }
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

    /// A run reached a new state (already recorded in the state DB).
    #[zbus(signal)]
    pub async fn run_changed(
        emitter: &SignalEmitter<'_>,
        run_id: &str,
        state: &str,
    ) -> zbus::Result<()>;
}

/// Serves the interface on `conn` and forwards the engine's run events as `RunChanged`.
pub async fn serve(conn: &Connection, engine: Engine, auth: Arc<Authorizer>) -> zbus::Result<()> {
    let mut events = engine.subscribe();
    conn.object_server()
        .at(OBJECT_PATH, Manager::new(engine, auth))
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
