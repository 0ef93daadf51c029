//! The sandbox's runtime directory (`XDG_RUNTIME_DIR`) and the session bus in it: the
//! user manager's own `dbus.socket`/`dbus.service`, admitting every local user.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Sandbox, SandboxError, find_in_path, io_err, write_file};

impl Sandbox {
    pub(super) fn bus_address(&self) -> String {
        format!("unix:path={}", dbus_escape(&self.runtime_dir().join("bus")))
    }

    pub(super) fn make_runtime_dir(&mut self) -> Result<(), SandboxError> {
        // Under /tmp (not $TMPDIR) so that any user can reach the bus socket, and short
        // enough for a unix socket path.
        let dir = PathBuf::from(format!(
            "/tmp/drover-sandbox-{}-{}",
            self.pid,
            random_hex()?
        ));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(io_err(format!("creating {}", dir.display())))?;
        self.runtime_dir = Some(dir.clone());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", dir.display())))?;
        // The session bus is the user manager's own dbus.socket/dbus.service, as on a real
        // host: systemd 252 connects its API to the bus only once it sees those units
        // running. Runtime units win over the packaged ones; ours admit every local user
        // (tests call as other uids) and leave the socket open to them.
        let units = dir.join("systemd/user");
        fs::create_dir_all(&units).map_err(io_err(format!("creating {}", units.display())))?;
        let config = dir.join("dbus.conf");
        write_file(&config, dbus_config(&dir).as_bytes())?;
        write_file(&units.join("dbus.socket"), DBUS_SOCKET_UNIT.as_bytes())?;
        let service = DBUS_SERVICE_UNIT
            .replace(
                "@DBUS_DAEMON@",
                &find_in_path("dbus-daemon")?.to_string_lossy(),
            )
            .replace("@CONFIG@", &config.to_string_lossy());
        write_file(&units.join("dbus.service"), service.as_bytes())?;
        Ok(())
    }
}

/// The session bus: any local user may connect, own names and talk to anyone (tests act as
/// other uids to check roles; drover's own role checks decide what a caller may do),
/// EXTERNAL auth only. Activation files are read from `$XDG_RUNTIME_DIR/dbus-1/services`
/// alone (a real session bus also reads /usr/share/dbus-1/services: left out so that a
/// drover installed on the host stays out of the sandbox).
fn dbus_config(runtime_dir: &Path) -> String {
    let services = runtime_dir.join("dbus-1/services");
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>systemd:</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{}</servicedir>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        services.display()
    )
}

const DBUS_SOCKET_UNIT: &str = "[Unit]
Description=D-Bus User Message Bus Socket (drover sandbox)

[Socket]
ListenStream=%t/bus
SocketMode=0666
";

const DBUS_SERVICE_UNIT: &str = "[Unit]
Description=D-Bus User Message Bus (drover sandbox)
Requires=dbus.socket

[Service]
Type=notify
NotifyAccess=main
ExecStart=@DBUS_DAEMON@ --config-file=@CONFIG@ --nofork --nopidfile --systemd-activation
";

/// D-Bus address values escape every byte outside `[-0-9A-Za-z_/.\*]` as %XX.
fn dbus_escape(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_/.\\*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

fn random_hex() -> Result<String, SandboxError> {
    let mut bytes = [0u8; 6];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn bus_address_escapes() {
        assert_eq!(dbus_escape(Path::new("/tmp/a b/bus")), "/tmp/a%20b/bus");
        assert_eq!(
            dbus_escape(Path::new("/tmp/d-1_x.y/bus")),
            "/tmp/d-1_x.y/bus"
        );
    }
}
