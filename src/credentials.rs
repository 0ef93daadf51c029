//! Acting as a user: a run's steps run as the user who submitted it, and what the agent
//! reads or writes on a user's behalf (workflow files, workspaces, worktrees, checkpoints,
//! transcripts, `requires` paths) it touches with that user's rights only.
//!
//! Two ways, one account:
//! - a child process drops to the account (supplementary groups, gid, uid, then
//!   no-new-privileges) before it execs: [`drop_before_exec`];
//! - in-process work (git2, file reads) runs on a thread of its own whose file-system
//!   identity is the account's: [`with_rights_of`]. Linux keeps credentials per thread
//!   (glibc only makes them process-wide by signalling every thread), so the raw
//!   `setgroups`/`setfsgid`/`setfsuid` system calls change that thread alone, and the thread
//!   ends with them. A file-system uid other than 0 also drops the capabilities that bypass
//!   permission checks (`CAP_DAC_OVERRIDE` and the like), so access is checked as the user's.
//!
//! An agent that is not root acts as itself only: asking it for another user is refused.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::libc;
use nix::unistd::{Gid, Uid, User, geteuid, getgrouplist};

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("no user with uid {0} in the password database")]
    NoSuchUid(u32),
    #[error("no user named {0:?} in the password database")]
    NoSuchName(String),
    #[error("cannot look up user {user}: {detail}")]
    Lookup { user: String, detail: String },
    #[error(
        "this agent runs as uid {agent} and cannot act as {user} (uid {uid}): only a root agent can"
    )]
    NotRoot { agent: u32, user: String, uid: u32 },
    #[error("cannot take on the rights of {user}: {source}")]
    Switch { user: String, source: io::Error },
    #[error("the thread acting as {0} ended without an answer")]
    Lost(String),
}

/// The `PATH` a process started as another user gets: systemd's default for services.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A user from the password database, as a step runs as them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one included, as `initgroups` sets them).
    pub groups: Vec<u32>,
    pub name: String,
    pub home: PathBuf,
    /// The login shell (`SHELL`), as the password database has it.
    #[serde(default)]
    pub shell: PathBuf,
}

impl Account {
    pub fn of_uid(uid: u32) -> Result<Account, CredentialsError> {
        let user = User::from_uid(Uid::from_raw(uid))
            .map_err(|e| CredentialsError::Lookup {
                user: format!("uid {uid}"),
                detail: e.to_string(),
            })?
            .ok_or(CredentialsError::NoSuchUid(uid))?;
        Account::from_user(user)
    }

    pub fn of_name(name: &str) -> Result<Account, CredentialsError> {
        let user = User::from_name(name)
            .map_err(|e| CredentialsError::Lookup {
                user: name.to_owned(),
                detail: e.to_string(),
            })?
            .ok_or_else(|| CredentialsError::NoSuchName(name.to_owned()))?;
        Account::from_user(user)
    }

    /// The account the agent itself runs as.
    pub fn agent() -> Result<Account, CredentialsError> {
        Account::of_uid(geteuid().as_raw())
    }

    fn from_user(user: User) -> Result<Account, CredentialsError> {
        let lookup = |detail: String| CredentialsError::Lookup {
            user: user.name.clone(),
            detail,
        };
        let c_name = CString::new(user.name.as_bytes()).map_err(|e| lookup(e.to_string()))?;
        let groups = getgrouplist(&c_name, user.gid).map_err(|e| lookup(e.to_string()))?;
        Ok(Account {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(Gid::as_raw).collect(),
            name: user.name,
            home: user.dir,
            shell: user.shell,
        })
    }

    /// Whether acting as this account means changing identity (the agent is someone else).
    pub fn is_other_than_agent(&self) -> bool {
        self.uid != geteuid().as_raw()
    }

    /// Refuses an account the agent cannot take on: any other than its own, unless root.
    pub fn check_agent_can_act_as(&self) -> Result<(), CredentialsError> {
        let agent = geteuid().as_raw();
        if agent == 0 || agent == self.uid {
            Ok(())
        } else {
            Err(CredentialsError::NotRoot {
                agent,
                user: self.name.clone(),
                uid: self.uid,
            })
        }
    }

    /// The environment a process started as this account begins with: the agent's own
    /// when the agent is this account; else a login's (`HOME`, `USER`, `LOGNAME`, `SHELL`,
    /// systemd's default `PATH`) with nothing of the agent's but its locale and time zone.
    /// An agent's environment is not another user's to see: it may hold the secrets a
    /// unit's `Environment=` gave it, and paths of its own (`CLAUDE_CONFIG_DIR`, `XDG_*`,
    /// `TMPDIR`) that would point another user's tools at the agent's files.
    pub fn start_env(&self) -> Vec<(String, String)> {
        if !self.is_other_than_agent() {
            return std::env::vars().collect();
        }
        let mut env = vec![
            ("HOME".to_owned(), self.home.to_string_lossy().into_owned()),
            ("USER".to_owned(), self.name.clone()),
            ("LOGNAME".to_owned(), self.name.clone()),
            (
                "SHELL".to_owned(),
                self.shell.to_string_lossy().into_owned(),
            ),
            ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ];
        env.extend(std::env::vars().filter(|(key, _)| {
            key == "LANG" || key == "LANGUAGE" || key == "TZ" || key.starts_with("LC_")
        }));
        env
    }

    /// The name a person reads: `name (uid N)`.
    pub fn describe(&self) -> String {
        format!("{} (uid {})", self.name, self.uid)
    }
}

/// Has the child `command` starts drop to `account` before it execs, and start in `cwd`
/// with that account's rights (a directory the user cannot enter fails the start), from
/// that account's environment ([`Account::start_env`]) and the variables set on `command`.
/// Does nothing but set the directory when the agent already is that account.
pub fn drop_before_exec(command: &mut std::process::Command, account: &Account, cwd: &Path) {
    if !account.is_other_than_agent() {
        command.current_dir(cwd);
        return;
    }
    let set: Vec<(std::ffi::OsString, std::ffi::OsString)> = command
        .get_envs()
        .filter_map(|(key, value)| Some((key.to_owned(), value?.to_owned())))
        .collect();
    command.env_clear().envs(account.start_env()).envs(set);
    // Everything the child needs is made here: between fork and exec nothing may allocate.
    let groups: Vec<libc::gid_t> = account.groups.clone();
    let (uid, gid) = (account.uid, account.gid);
    let cwd = CString::new(cwd.as_os_str().as_bytes());
    // SAFETY: the closure only makes system calls (async-signal-safe) on data prepared
    // before the fork.
    unsafe {
        command.pre_exec(move || {
            let cwd = cwd
                .as_ref()
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            check(libc::setgroups(groups.len(), groups.as_ptr()))?;
            check(libc::setgid(gid))?;
            check(libc::setuid(uid))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            check(libc::chdir(cwd.as_ptr()))?;
            Ok(())
        });
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs `work` with `account`'s file-system rights, on a thread of its own that ends with
/// them; on the calling thread when the agent already is that account. Blocking: call it
/// off the async runtime.
pub fn with_rights_of<T: Send>(
    account: &Account,
    work: impl FnOnce() -> T + Send,
) -> Result<T, CredentialsError> {
    if !account.is_other_than_agent() {
        return Ok(work());
    }
    account.check_agent_can_act_as()?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                become_on_this_thread(account).map_err(|source| CredentialsError::Switch {
                    user: account.describe(),
                    source,
                })?;
                Ok(work())
            })
            .join()
            .map_err(|_| CredentialsError::Lost(account.describe()))?
    })
}

/// Gives the calling thread `account`'s groups and file-system uid and gid. Raw system
/// calls: glibc's wrappers would change every thread of the agent.
fn become_on_this_thread(account: &Account) -> io::Result<()> {
    let groups: &[libc::gid_t] = &account.groups;
    // SAFETY: plain system calls on valid memory; they change this thread only.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) == -1 {
            return Err(io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, account.gid);
        libc::syscall(libc::SYS_setfsuid, account.uid);
        // setfsuid reports no error: it returns the previous value. Asking again (with an
        // invalid id, which changes nothing) returns the current one.
        let fsuid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        let fsgid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        if fsuid != account.uid || fsgid != account.gid {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: permission denied", .0.display())]
    PermissionDenied(PathBuf),
    #[error("{}: no such file", .0.display())]
    NotFound(PathBuf),
    #[error("{}: not a regular file", .0.display())]
    NotRegular(PathBuf),
    #[error("{}: larger than the limit of {limit} bytes", .path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Reads a regular file of at most `limit` bytes without ever waiting: a FIFO or a device
/// is refused before anything is read from it (it is opened non-blocking), and a file that
/// grows past the limit while being read is refused too. A file the caller may not read
/// is "permission denied" and nothing else is said about it.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let io_error = |source: io::Error| match source.kind() {
        io::ErrorKind::PermissionDenied => ReadError::PermissionDenied(path.to_owned()),
        io::ErrorKind::NotFound => ReadError::NotFound(path.to_owned()),
        _ => ReadError::Io {
            path: path.to_owned(),
            source,
        },
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io_error)?;
    let meta = file.metadata().map_err(io_error)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(path.to_owned()));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::process::Command;

    use super::*;

    const NOBODY: u32 = 65534;

    /// These tests change identity: they need a root agent's rights.
    fn nobody() -> Account {
        assert!(
            geteuid().is_root(),
            "the credentials tests must run as root (they act as uid {NOBODY})"
        );
        Account::of_uid(NOBODY).expect("uid 65534 (nobody) in the password database")
    }

    fn private_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        dir
    }

    #[test]
    fn a_thread_with_a_users_rights_reads_and_writes_as_that_user() {
        let nobody = nobody();
        let root_only = private_dir();
        let secret = root_only.path().join("secret");
        std::fs::write(&secret, "sk-live-456").expect("write");
        let open = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod");
        let made = open.path().join("made");

        let (read, wrote) = with_rights_of(&nobody, || {
            (read_regular_file(&secret, 1024), std::fs::write(&made, "x"))
        })
        .expect("act as nobody");
        assert!(
            matches!(read, Err(ReadError::PermissionDenied(_))),
            "nobody read a root-only file: {read:?}"
        );
        assert_eq!(
            read.unwrap_err().to_string(),
            format!("{}: permission denied", secret.display())
        );
        wrote.expect("nobody may write a sticky world-writable dir");
        let meta = std::fs::metadata(&made).expect("stat");
        assert_eq!((meta.uid(), meta.gid()), (nobody.uid, nobody.gid));
        // The agent's own threads kept root's rights.
        assert_eq!(
            read_regular_file(&secret, 1024).expect("root reads"),
            b"sk-live-456"
        );
    }

    #[test]
    fn a_child_drops_to_the_user_with_no_new_privileges_before_exec() {
        let nobody = nobody();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "id -u; id -g; id -G; pwd; grep NoNewPrivs /proc/self/status",
        ]);
        drop_before_exec(&mut command, &nobody, dir.path());
        let out = command.output().expect("sh");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        let groups: Vec<String> = nobody.groups.iter().map(u32::to_string).collect();
        assert_eq!(lines[0], NOBODY.to_string());
        assert_eq!(lines[1], nobody.gid.to_string());
        assert_eq!(lines[2], groups.join(" "), "supplementary groups");
        assert_eq!(lines[3], dir.path().to_string_lossy());
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["NoNewPrivs:", "1"]
        );
    }

    #[test]
    fn a_child_cannot_start_in_a_directory_its_user_cannot_enter() {
        let nobody = nobody();
        let root_only = private_dir();
        let mut command = Command::new("true");
        drop_before_exec(&mut command, &nobody, root_only.path());
        let error = command
            .status()
            .expect_err("nobody entered a root-only dir");
        assert_eq!(error.kind(), io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn reading_refuses_fifos_devices_and_large_files_without_waiting() {
        let dir = tempfile::tempdir().expect("temp dir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        // Nobody writes the FIFO: a blocking open would wait here for ever.
        assert!(matches!(
            read_regular_file(&fifo, 1 << 20),
            Err(ReadError::NotRegular(_))
        ));
        assert!(matches!(
            read_regular_file(Path::new("/dev/zero"), 1 << 20),
            Err(ReadError::NotRegular(_))
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; 2048]).expect("write");
        let error = read_regular_file(&big, 1024).expect_err("over the limit");
        assert_eq!(
            error.to_string(),
            format!("{}: larger than the limit of 1024 bytes", big.display())
        );
        assert!(matches!(
            read_regular_file(&dir.path().join("absent"), 1024),
            Err(ReadError::NotFound(_))
        ));
    }
}
