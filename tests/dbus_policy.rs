//! `units/dbus/org.drover.Drover1.conf` in a real dbus-daemon configured like Debian's
//! system bus (deny by default): root may own `org.drover.Drover1`; any other local user
//! may call its Manager interface (drover authorises and audits each mutating call
//! itself) and read its properties, but may neither set them, nor own the name, nor call
//! another interface of it.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::wait_until;

const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/units/dbus/org.drover.Drover1.conf"
);

/// The default policy of Debian's /usr/share/dbus-1/system.conf, then drover's file.
fn system_bus_config(socket: &std::path::Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{POLICY}</include>
</busconfig>
"#,
        socket.display()
    )
}

/// What answers on the name in place of the agent: a method and a property on the
/// Manager interface, and a second interface the policy does not open.
struct Manager;

#[zbus::interface(name = "org.drover.Drover1.Manager")]
impl Manager {
    fn list(&self) -> String {
        "[]".to_owned()
    }

    #[zbus(property)]
    fn version(&self) -> String {
        "test".to_owned()
    }

    #[zbus(property)]
    fn set_version(&mut self, _value: String) {}
}

struct Other;

#[zbus::interface(name = "org.drover.Drover1.Other")]
impl Other {
    fn ping(&self) -> String {
        "pong".to_owned()
    }
}

struct Bus {
    daemon: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

fn start_bus() -> Bus {
    let dir = tempfile::tempdir().expect("tempdir");
    // Other users reach the socket through the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = dir.path().join("system_bus_socket");
    let config = dir.path().join("system.conf");
    std::fs::write(&config, system_bus_config(&socket)).expect("write the bus config");
    let daemon = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--nopidfile"])
        .stdin(Stdio::null())
        .spawn()
        .expect("dbus-daemon (package dbus-daemon) is needed");
    wait_until(Duration::from_secs(10), "the bus socket", || {
        socket.exists()
    });
    Bus {
        daemon,
        address: format!("unix:path={}", socket.display()),
        _dir: dir,
    }
}

/// `busctl --address=… ARGS` as uid 65534 (nobody).
fn busctl_as_nobody(bus: &Bus, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "busctl"])
        .arg(format!("--address={}", bus.address))
        .args(args)
        .output()
        .expect("setpriv and busctl are needed")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_system_bus_policy_opens_the_manager_interface_and_nothing_else() {
    let bus = start_bus();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    // Root owns the name, as the system agent does.
    let _owner = runtime.block_on(async {
        zbus::connection::Builder::address(bus.address.as_str())
            .name("org.drover.Drover1")
            .serve_at("/org/drover/Drover1", Manager)
            .serve_at("/org/drover/Drover1", Other)
            .build()
            .await
            .expect("root may own org.drover.Drover1")
    });
    let manager = [
        "org.drover.Drover1",
        "/org/drover/Drover1",
        "org.drover.Drover1.Manager",
    ];

    let call = busctl_as_nobody(&bus, &[&["call"][..], &manager, &["List"]].concat());
    assert!(
        call.status.success(),
        "nobody may call the Manager: {}",
        text(&call)
    );
    assert!(text(&call).contains("[]"), "{}", text(&call));

    let get = busctl_as_nobody(
        &bus,
        &[&["get-property"][..], &manager, &["Version"]].concat(),
    );
    assert!(
        get.status.success(),
        "nobody may read a property: {}",
        text(&get)
    );

    let set = busctl_as_nobody(
        &bus,
        &[&["set-property"][..], &manager, &["Version", "s", "x"]].concat(),
    );
    assert!(
        !set.status.success(),
        "nobody set a property: {}",
        text(&set)
    );
    assert!(
        text(&set).to_lowercase().contains("denied"),
        "{}",
        text(&set)
    );

    let other = busctl_as_nobody(
        &bus,
        &[
            "call",
            "org.drover.Drover1",
            "/org/drover/Drover1",
            "org.drover.Drover1.Other",
            "Ping",
        ],
    );
    assert!(
        !other.status.success(),
        "nobody called another interface: {}",
        text(&other)
    );
    assert!(
        text(&other).to_lowercase().contains("denied"),
        "{}",
        text(&other)
    );

    let own = busctl_as_nobody(
        &bus,
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            "org.drover.Drover1",
            "0",
        ],
    );
    assert!(
        !own.status.success(),
        "nobody may own the name: {}",
        text(&own)
    );
    assert!(
        text(&own).to_lowercase().contains("denied"),
        "{}",
        text(&own)
    );
}
