//! The agent's interfaces to the outside: the D-Bus service `org.drover.Drover1` (and its
//! client proxy, which the CLI uses), and authorisation by role. Only this module and the
//! CLI know the wire formats.

pub mod auth;
pub mod dbus;
pub mod http;

use zbus::proxy;

pub const BUS_NAME: &str = "org.drover.Drover1";
pub const OBJECT_PATH: &str = "/org/drover/Drover1";
pub const INTERFACE: &str = "org.drover.Drover1.Manager";

/// The client side of `org.drover.Drover1.Manager`.
#[proxy(
    interface = "org.drover.Drover1.Manager",
    default_service = "org.drover.Drover1",
    default_path = "/org/drover/Drover1"
)]
pub trait Drover {
    fn run(
        &self,
        workflow_path: &str,
        params: std::collections::HashMap<&str, &str>,
    ) -> zbus::Result<String>;
    fn list(&self) -> zbus::Result<String>;
    fn get(&self, run_id: &str) -> zbus::Result<String>;
    fn kill(
        &self,
        run: &str,
        reason: &str,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    fn enter_critical(&self, run: &str, label: &str) -> zbus::Result<()>;
    fn leave_critical(&self, run: &str, label: &str) -> zbus::Result<()>;
    fn audit(&self, run: &str) -> zbus::Result<String>;
    fn checkpoint(&self, run: &str, label: &str) -> zbus::Result<String>;
    fn checkpoints(&self, run: &str) -> zbus::Result<String>;
    fn restart(
        &self,
        run: &str,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    fn rollback(
        &self,
        run: &str,
        to: u32,
        options: std::collections::HashMap<&str, zbus::Variant<'_>>,
    ) -> zbus::Result<String>;
    fn actions(&self, run: &str) -> zbus::Result<String>;
    fn history(&self, workflow: &str, since: &str) -> zbus::Result<String>;
    fn alerts(&self, all: bool) -> zbus::Result<String>;
    fn silence(&self, target: &str, duration: &str, reason: &str) -> zbus::Result<String>;
    fn silences(&self, all: bool) -> zbus::Result<String>;
    fn raise_alert(
        &self,
        rule: &str,
        run: &str,
        severity: &str,
        summary: &str,
    ) -> zbus::Result<String>;
    fn resolve_alert(&self, key: &str) -> zbus::Result<String>;
    fn metrics(&self, run: &str) -> zbus::Result<String>;
    fn top(&self) -> zbus::Result<String>;
    fn reload(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn run_changed(&self, run_id: String, state: String) -> zbus::Result<()>;
}
