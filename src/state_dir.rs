//! The state directory is private to the agent's user: it holds parameters, step
//! environments and output. The directory and every directory in it are 0700, every file
//! 0600, whatever the umask: everything the agent (and the shim) creates there is created
//! through these helpers, and [`secure`] fixes what an older agent or a hand left behind.
//! (The steps' own files are not made here: a step keeps the umask it was started with.)

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

pub const DIR_MODE: u32 = 0o700;
pub const FILE_MODE: u32 = 0o600;

/// Worktrees of runs recorded before they moved into their repositories: the users'
/// files, left as they are.
const OLD_WORKTREES: &str = "worktrees";

/// Creates `path` and its missing parents as private directories.
pub fn create_dir(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    fs::set_permissions(path, Permissions::from_mode(DIR_MODE))
}

/// Options that create a file private to the agent's user (mode 0600).
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Writes `bytes` to a private file at `path`, replacing what it held.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?
        .write_all(bytes)
}

/// Room left on the file system of a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeSpace {
    /// Bytes an unprivileged writer may still use.
    pub bytes: u64,
    /// Inodes left, where the file system counts them (btrfs, for one, does not).
    pub inodes: Option<u64>,
}

/// The room left on `path`'s file system.
pub fn free_space(path: &Path) -> io::Result<FreeSpace> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(FreeSpace {
        bytes: (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64),
        inodes: (stat.files() > 0).then_some(stat.files_available() as u64),
    })
}

/// Makes the state directory and everything in it private; returns how many modes it
/// changed. Symbolic links are not followed (nor changed).
pub fn secure(state_dir: &Path) -> io::Result<usize> {
    create_dir(state_dir)?;
    let mut fixed = 0;
    secure_below(state_dir, true, &mut fixed)?;
    Ok(fixed)
}

fn secure_below(dir: &Path, top: bool, fixed: &mut usize) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if top && entry.file_name() == OLD_WORKTREES {
            continue;
        }
        let kind = entry.file_type()?;
        let mode = if kind.is_dir() {
            DIR_MODE
        } else if kind.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        let path = entry.path();
        if entry.metadata()?.permissions().mode() & 0o7777 != mode {
            fs::set_permissions(&path, Permissions::from_mode(mode))?;
            *fixed += 1;
        }
        if kind.is_dir() {
            secure_below(&path, false, fixed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path)
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn what_an_older_agent_left_open_is_made_private_but_old_worktrees_are_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        fs::create_dir_all(state.join("runs/r1")).expect("mkdir");
        fs::create_dir_all(state.join("worktrees/r1")).expect("mkdir");
        for file in ["state.db", "state.db-wal", "runs/r1/build.1.log"] {
            fs::write(state.join(file), "x").expect("write");
            fs::set_permissions(state.join(file), Permissions::from_mode(0o644)).expect("chmod");
        }
        fs::write(state.join("worktrees/r1/README"), "x").expect("write");
        fs::set_permissions(
            state.join("worktrees/r1/README"),
            Permissions::from_mode(0o644),
        )
        .expect("chmod");
        fs::set_permissions(&state, Permissions::from_mode(0o755)).expect("chmod");

        let fixed = secure(&state).expect("secure");
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("runs")), 0o700);
        assert_eq!(mode(&state.join("runs/r1")), 0o700);
        for file in ["state.db", "state.db-wal", "runs/r1/build.1.log"] {
            assert_eq!(mode(&state.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&state.join("worktrees/r1/README")), 0o644);
        assert!(fixed >= 5, "{fixed} modes changed");
        assert_eq!(
            secure(&state).expect("secure again"),
            0,
            "nothing left to fix"
        );
    }

    #[test]
    fn files_and_directories_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().expect("temp dir");
        let new = dir.path().join("a/b");
        create_dir(&new).expect("create");
        write(&new.join("f"), b"secret").expect("write");
        assert_eq!(mode(&new), 0o700);
        assert_eq!(mode(&new.join("f")), 0o600);
    }
}
