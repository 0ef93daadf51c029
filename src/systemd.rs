//! The D-Bus client for systemd's manager: start a step's scope, stop or kill it, read its
//! state and result. Nothing else in drover speaks to systemd.

use std::time::Duration;

use futures_util::StreamExt;
use zbus::{Connection, OwnedObjectPath, Variant, proxy};

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("systemd D-Bus call {call} failed: {source}")]
    Call {
        call: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("starting {unit} failed: systemd's job ended with result {result:?}")]
    JobFailed { unit: String, result: String },
    #[error(
        "starting {unit}: systemd's job did not finish within {0:?}",
        JOB_TIMEOUT
    )]
    JobTimeout { unit: String },
}

type Result<T> = std::result::Result<T, SystemdError>;

fn call(call: &'static str) -> impl FnOnce(zbus::Error) -> SystemdError {
    move |source| SystemdError::Call { call, source }
}

/// How long a start job may take before drover gives up on the step.
const JOB_TIMEOUT: Duration = Duration::from_secs(30);

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;

    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Variant<'_>)],
        aux: &[(&str, Vec<(&str, Variant<'_>)>)],
    ) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    fn kill_unit(&self, name: &str, whom: &str, signal: i32) -> zbus::Result<()>;

    fn get_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;

    #[allow(clippy::type_complexity)]
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<
        Vec<(
            String,
            String,
            String,
            String,
            String,
            String,
            OwnedObjectPath,
            u32,
            String,
            OwnedObjectPath,
        )>,
    >;

    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String);
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.systemd1.Scope",
    default_service = "org.freedesktop.systemd1"
)]
trait Scope {
    #[zbus(property)]
    fn result(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn control_group(&self) -> zbus::Result<String>;
}

/// Resource limits and accounting for a new scope, in systemd's own units.
#[derive(Debug, Clone, Default)]
pub struct ScopeProperties {
    pub description: String,
    pub slice: String,
    pub memory_max: Option<u64>,
    pub tasks_max: Option<u64>,
    pub cpu_quota_percent: Option<u32>,
    pub runtime_max: Option<Duration>,
    /// How long systemd waits after SIGTERM before SIGKILL when it stops the scope itself
    /// (a `RuntimeMaxSec` timeout, `systemctl stop`).
    pub stop_timeout: Duration,
}

/// One scope as systemd lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSummary {
    pub name: String,
    pub active_state: String,
}

/// How a scope ended, as far as systemd knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitOutcome {
    pub active_state: String,
    /// systemd's `Result` of the scope: "success", "timeout", "oom-kill", "signal", …
    pub result: String,
}

/// A connection to the systemd manager that drover's agent runs under.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
}

impl Systemd {
    /// Connects through an existing bus connection (the session bus for a user agent, the
    /// system bus for a system agent) and subscribes to the manager's signals.
    pub async fn new(conn: &Connection) -> Result<Systemd> {
        let manager = ManagerProxy::new(conn)
            .await
            .map_err(call("Manager proxy"))?;
        manager.subscribe().await.map_err(call("Subscribe"))?;
        Ok(Systemd {
            conn: conn.clone(),
            manager,
        })
    }

    /// Starts a transient scope around `pids` and returns once systemd's start job has
    /// finished, i.e. once the processes are inside the scope's cgroup.
    pub async fn start_scope(
        &self,
        unit: &str,
        pids: &[u32],
        props: &ScopeProperties,
    ) -> Result<()> {
        let mut properties: Vec<(&str, Variant<'_>)> = vec![
            ("Description", props.description.as_str().into()),
            ("Slice", props.slice.as_str().into()),
            ("PIDs", pids.to_vec().into()),
            ("CPUAccounting", true.into()),
            ("MemoryAccounting", true.into()),
            ("TasksAccounting", true.into()),
            ("TimeoutStopUSec", micros(props.stop_timeout).into()),
        ];
        if let Some(bytes) = props.memory_max {
            properties.push(("MemoryMax", bytes.into()));
        }
        if let Some(tasks) = props.tasks_max {
            properties.push(("TasksMax", tasks.into()));
        }
        if let Some(percent) = props.cpu_quota_percent {
            // systemd's CPUQuota=P% is CPUQuotaPerSecUSec = P * 10 ms.
            properties.push(("CPUQuotaPerSecUSec", (u64::from(percent) * 10_000).into()));
        }
        if let Some(limit) = props.runtime_max {
            properties.push(("RuntimeMaxUSec", micros(limit).into()));
        }

        // Subscribe before the call: the job can end before the call returns.
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call("JobRemoved match"))?;
        // The stream is read while the call is in flight: a signal stream left unread
        // fills its queue and then stalls the whole connection, this call's reply included
        // (many steps starting at once each see every JobRemoved).
        let start = self
            .manager
            .start_transient_unit(unit, "fail", &properties, &[]);
        tokio::pin!(start);
        let mut ended_meanwhile = Vec::new();
        let job = loop {
            tokio::select! {
                reply = &mut start => break reply.map_err(call("StartTransientUnit"))?,
                Some(signal) = removed.next() => {
                    if let Ok(args) = signal.args() {
                        ended_meanwhile.push((args.job.to_owned(), args.result.to_owned()));
                    }
                }
            }
        };
        if let Some((_, result)) = ended_meanwhile.into_iter().find(|(j, _)| *j == job) {
            return job_outcome(unit, Some(result.to_string()));
        }
        let wait = async {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                if args.job == job {
                    return Some(args.result);
                }
            }
            None
        };
        job_outcome(
            unit,
            tokio::time::timeout(JOB_TIMEOUT, wait).await.ok().flatten(),
        )
    }

    /// Drover's scopes that systemd still has loaded (running, or failed and not reset).
    pub async fn list_scopes(&self, pattern: &str) -> Result<Vec<UnitSummary>> {
        let units = self
            .manager
            .list_units_by_patterns(&[], &[pattern])
            .await
            .map_err(call("ListUnitsByPatterns"))?;
        Ok(units
            .into_iter()
            .map(|u| UnitSummary {
                name: u.0,
                active_state: u.3,
            })
            .collect())
    }

    /// The scope's state and result, or `None` when systemd no longer has it loaded.
    pub async fn scope_outcome(&self, unit: &str) -> Result<Option<UnitOutcome>> {
        let path = match self.manager.get_unit(unit).await {
            Ok(path) => path,
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                return Ok(None);
            }
            Err(source) => {
                return Err(SystemdError::Call {
                    call: "GetUnit",
                    source,
                });
            }
        };
        let unit_proxy = UnitProxy::builder(&self.conn)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(call("Unit proxy"))?;
        let scope_proxy = ScopeProxy::builder(&self.conn)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(call("Scope proxy"))?;
        let active_state = match unit_proxy.active_state().await {
            Ok(state) => state,
            // The unit was unloaded between GetUnit and this read.
            Err(zbus::Error::MethodError(..)) => return Ok(None),
            Err(source) => {
                return Err(SystemdError::Call {
                    call: "ActiveState",
                    source,
                });
            }
        };
        let result = scope_proxy.result().await.unwrap_or_default();
        Ok(Some(UnitOutcome {
            active_state,
            result,
        }))
    }

    /// Stops a unit: for a scope, SIGTERM to every process in it and SIGKILL after its stop
    /// timeout; for a slice, the same to everything below it.
    pub async fn stop_unit(&self, unit: &str) -> Result<()> {
        match self.manager.stop_unit(unit, "replace").await {
            Ok(_) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            Err(source) => Err(SystemdError::Call {
                call: "StopUnit",
                source,
            }),
        }
    }

    /// Sends `signal` to every process of the unit; a unit already gone is not an error.
    pub async fn kill_unit(&self, unit: &str, signal: i32) -> Result<()> {
        match self.manager.kill_unit(unit, "all", signal).await {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
            {
                Ok(())
            }
            Err(source) => Err(SystemdError::Call {
                call: "KillUnit",
                source,
            }),
        }
    }

    /// The scope's cgroup, relative to the hierarchies' roots; `None` when it is gone.
    pub async fn control_group(&self, unit: &str) -> Result<Option<String>> {
        let path = match self.manager.get_unit(unit).await {
            Ok(path) => path,
            Err(zbus::Error::MethodError(..)) => return Ok(None),
            Err(source) => {
                return Err(SystemdError::Call {
                    call: "GetUnit",
                    source,
                });
            }
        };
        let scope = ScopeProxy::builder(&self.conn)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(call("Scope proxy"))?;
        Ok(scope.control_group().await.ok().filter(|cg| !cg.is_empty()))
    }

    /// Forgets a failed scope so its name can be reused and it stops showing as failed.
    pub async fn reset_failed(&self, unit: &str) -> Result<()> {
        match self.manager.reset_failed_unit(unit).await {
            Ok(()) | Err(zbus::Error::MethodError(..)) => Ok(()),
            Err(source) => Err(SystemdError::Call {
                call: "ResetFailedUnit",
                source,
            }),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A unit's resource accounting as systemd reports it; `None` where systemd leaves a value
/// unset (it says `u64::MAX`, "[not set]": a controller it does not manage on this host, or
/// a property this systemd does not have).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounting {
    pub cpu_usage_nsec: Option<u64>,
    pub memory_current: Option<u64>,
    pub memory_peak: Option<u64>,
    pub tasks_current: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    /// The unit's cgroup relative to the hierarchies' roots, for the cgroup-file fallback.
    pub control_group: Option<String>,
}

/// The properties of a unit's `GetAll` reply that `Accounting` keeps; the rest of the
/// reply (a scope has some two hundred properties) is skipped unread, without building a
/// value for each.
#[derive(Debug, Default, zbus::DeserializeDict, zbus::Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
struct AccountingProperties {
    #[zbus(rename = "CPUUsageNSec")]
    cpu_usage_nsec: Option<u64>,
    memory_current: Option<u64>,
    memory_peak: Option<u64>,
    tasks_current: Option<u64>,
    #[zbus(rename = "IOReadBytes")]
    io_read_bytes: Option<u64>,
    #[zbus(rename = "IOWriteBytes")]
    io_write_bytes: Option<u64>,
    control_group: Option<String>,
}

impl From<AccountingProperties> for Accounting {
    fn from(props: AccountingProperties) -> Accounting {
        let set = |n: Option<u64>| n.filter(|n| *n != u64::MAX);
        Accounting {
            cpu_usage_nsec: set(props.cpu_usage_nsec),
            memory_current: set(props.memory_current),
            memory_peak: set(props.memory_peak),
            tasks_current: set(props.tasks_current),
            io_read_bytes: set(props.io_read_bytes),
            io_write_bytes: set(props.io_write_bytes),
            control_group: props.control_group.filter(|cg| !cg.is_empty()),
        }
    }
}

/// systemd's object path for a unit: its name with every byte that is not a letter or a
/// digit (and a leading digit) written as `_xx`. Computing it spares a `GetUnit` round trip
/// per unit and sample.
fn unit_object_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    if unit.is_empty() {
        path.push('_');
    }
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

impl Systemd {
    /// A scope's or slice's accounting in one `Properties.GetAll` call; `None` when systemd
    /// does not have the unit loaded (it ended, or never started).
    pub async fn unit_accounting(&self, unit: &str) -> Result<Option<Accounting>> {
        let interface = if unit.ends_with(".slice") {
            "org.freedesktop.systemd1.Slice"
        } else {
            "org.freedesktop.systemd1.Scope"
        };
        let path = unit_object_path(unit);
        let reply = match self
            .conn
            .call_method(
                Some("org.freedesktop.systemd1"),
                path.as_str(),
                Some("org.freedesktop.DBus.Properties"),
                "GetAll",
                &(interface,),
            )
            .await
        {
            Ok(reply) => reply,
            // A unit systemd does not know (or no longer knows) has no such interface.
            Err(zbus::Error::MethodError(..)) => return Ok(None),
            Err(source) => {
                return Err(SystemdError::Call {
                    call: "Properties.GetAll",
                    source,
                });
            }
        };
        let accounting: Accounting = reply
            .body()
            .deserialize::<AccountingProperties>()
            .map_err(call("Properties.GetAll reply"))?
            .into();
        // A name systemd merely loaded for the call (no such unit running) has no cgroup.
        if accounting.control_group.is_none() && accounting.tasks_current.is_none() {
            return Ok(None);
        }
        Ok(Some(accounting))
    }
}

/// A start job's `result`, or `None` if it did not end in time.
fn job_outcome(unit: &str, result: Option<String>) -> Result<()> {
    match result {
        Some(result) if result == "done" => Ok(()),
        Some(result) => Err(SystemdError::JobFailed {
            unit: unit.to_owned(),
            result,
        }),
        None => Err(SystemdError::JobTimeout {
            unit: unit.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_escape_like_systemd() {
        assert_eq!(
            unit_object_path("drover-ab12-build-1.scope"),
            "/org/freedesktop/systemd1/unit/drover_2dab12_2dbuild_2d1_2escope"
        );
        assert_eq!(
            unit_object_path("1x_y.slice"),
            "/org/freedesktop/systemd1/unit/_31x_5fy_2eslice"
        );
    }
}
