//! The operations every door calls: D-Bus today, HTTP, Slack and MCP next, and the rules
//! and SIGHUP, which are callers too. Each operation takes a [`Caller`] and its typed
//! arguments ([`types`]), authorises the caller's role, audits refusals and outcomes, and
//! calls the part that does the work (engine, alerts, monitor, reloader). A door only
//! learns its caller, decodes its wire format into the arguments and encodes the result:
//! what may be asked, by whom, and what is audited is decided here, once.
//!
//! One file per operation, mirrored by the CLI's `cli/<command>.rs`.

mod alerts;
mod audit;
mod caller;
mod checkpoint;
mod critical;
mod error;
mod events;
mod history;
mod kill;
mod logs;
mod metrics;
mod refusals;
mod reload;
mod restart;
mod rollback;
mod run;
mod runs;
mod scrape;
mod silence;
mod tokens;
pub mod types;

use std::sync::Arc;

pub use caller::{Caller, Channel};
pub use error::{ErrorKind, InputError, OpsError};
pub use events::EventStream;
pub use scrape::{Health, Scrape};

use crate::alerts::Alerts;
use crate::auth::{Authorizer, Role};
use crate::engine::{ActionRequest, Engine};
use crate::model::EngineEvent;
use crate::monitor::Monitor;
use crate::reload::Reloader;
use crate::tokens::Tokens;

pub type Result<T> = std::result::Result<T, OpsError>;

/// The parts the operations call. Cheap to clone: every door and the automation hold one.
#[derive(Clone)]
pub struct Ops {
    engine: Engine,
    alerts: Alerts,
    auth: Arc<Authorizer>,
    monitor: Monitor,
    reloader: Arc<Reloader>,
    tokens: Arc<Tokens>,
    refusals: Arc<refusals::RefusalRate>,
    events: Arc<events::EventHub>,
}

impl Ops {
    /// The operations over these parts; starts the event hub's tasks (on the current tokio
    /// runtime).
    pub fn new(
        engine: Engine,
        alerts: Alerts,
        auth: Arc<Authorizer>,
        monitor: Monitor,
        reloader: Arc<Reloader>,
        tokens: Arc<Tokens>,
    ) -> Ops {
        // The event hub listens from the start, so a stream resumed later misses nothing
        // that happened meanwhile.
        let events = events::EventHub::start(&engine, &monitor, &alerts);
        Ops {
            events,
            engine,
            alerts,
            auth,
            monitor,
            reloader,
            tokens,
            refusals: Arc::default(),
        }
    }

    /// The caller a door identified by uid (D-Bus: the bus's word for the sender), with
    /// the role the `[auth]` mapping gives it now.
    pub fn user(&self, uid: u32, channel: Channel) -> Caller {
        Caller::user(uid, channel, &self.auth)
    }

    /// Every run's transitions and step starts and ends, as they are recorded (for the
    /// doors that announce them: D-Bus `RunChanged`).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EngineEvent> {
        self.engine.subscribe()
    }

    /// Allows a call that changes nothing that is audited (reads, critical spans) when
    /// the caller holds `needed`; a refusal is logged.
    fn authorise(&self, caller: &Caller, needed: Role, action: &'static str) -> Result<()> {
        caller.require(needed, action).map_err(|denied| {
            tracing::warn!(drover_event = "denied", "refused: {denied}");
            OpsError::Denied(denied)
        })
    }

    /// The caller's request for `action` on `run` (checkpoint, restart, rollback,
    /// silence), if their role allows it (operator) and `input` is within bounds; a
    /// refusal is audited.
    fn action_request(
        &self,
        caller: &Caller,
        run: String,
        action: &'static str,
        confirm: bool,
        input: std::result::Result<(), InputError>,
    ) -> Result<ActionRequest> {
        let audited = refusals::Audited {
            action,
            run: &run,
            about: "",
        };
        self.admit_action(caller, Role::Operator, action, audited, input)?;
        Ok(ActionRequest {
            run,
            by: caller.requester(),
            confirm,
        })
    }
}
