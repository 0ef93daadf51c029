//! `/proc/self/mountinfo`, parsed once for everyone who needs mounts: each line's mount
//! root, mount point, file-system type and super options, with the kernel's octal escapes
//! undone.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo (proc(5)), e.g.
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// The directory of the file system shown at the mount point: `/`, unless only a
    /// subtree is mounted there (a bind mount, a container's view of a cgroup hierarchy).
    pub(crate) root: String,
    pub(crate) mount_point: PathBuf,
    pub(crate) fs_type: String,
    /// The file system's own options (for cgroup v1: its controllers, `name=systemd`).
    pub(crate) super_options: Vec<String>,
}

/// This process's mounts, in the order the kernel lists them.
pub(crate) fn read_own() -> io::Result<Vec<MountEntry>> {
    fs::read_to_string("/proc/self/mountinfo").map(|text| parse(&text))
}

/// Every well-formed line; a line that is not (none are, from the kernel) is left out.
pub(crate) fn parse(mountinfo: &str) -> Vec<MountEntry> {
    mountinfo.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // Spaces inside fields are escaped (`\040`), so fields split on a plain space.
    let mut fields = line.split(' ');
    let _mount_id = fields.next()?;
    let _parent_id = fields.next()?;
    let _major_minor = fields.next()?;
    let root = fields.next()?;
    let mount_point = fields.next()?;
    let _mount_options = fields.next()?;
    // Zero or more optional fields ("shared:1", "master:2", …), ended by a lone "-".
    fields.by_ref().find(|field| *field == "-")?;
    let fs_type = fields.next()?;
    let _source = fields.next()?;
    let super_options = fields.next()?;
    Some(MountEntry {
        root: String::from_utf8_lossy(&unescape(root)).into_owned(),
        mount_point: PathBuf::from(OsString::from_vec(unescape(mount_point))),
        fs_type: String::from_utf8_lossy(&unescape(fs_type)).into_owned(),
        // Commas inside an option's value are escaped too, so split first.
        super_options: super_options
            .split(',')
            .map(|option| String::from_utf8_lossy(&unescape(option)).into_owned())
            .collect(),
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011` tab, `\012` newline, `\134`
/// backslash); a backslash not followed by three octal digits of one byte stays as it is.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(&[high, mid, low]) = b.get(i + 1..i + 4)
            && (b'0'..=b'3').contains(&high)
            && [mid, low].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push((high - b'0') * 64 + (mid - b'0') * 8 + (low - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn mountinfo_parses_cgroup_lines() {
        let text = "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                    50 31 0:40 /x /a\\040b rw - cgroup cgroup rw,cpu,cpuacct\n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(m[0].super_options.iter().any(|o| o == "memory"));
        assert_eq!(m[1].fs_type, "cgroup2");
        assert_eq!(m[2].mount_point, PathBuf::from("/a b"));
        assert_eq!(m[2].root, "/x");
    }

    #[test]
    fn reads_the_fields_of_a_line_without_optional_fields() {
        let m = parse("35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n");
        assert_eq!(
            m,
            vec![MountEntry {
                root: "/".into(),
                mount_point: "/sys/fs/cgroup/memory".into(),
                fs_type: "cgroup".into(),
                super_options: vec!["rw".into(), "memory".into()],
            }]
        );
    }

    #[test]
    fn skips_the_optional_fields_before_the_separator() {
        let m = parse(
            "29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n\
             36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 propagate_from:2 unbindable - ext3 /dev/root rw,errors=continue\n",
        );
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/sys/fs/cgroup"));
        assert_eq!(m[0].fs_type, "cgroup2");
        assert_eq!(
            m[0].super_options,
            ["rw", "nsdelegate", "memory_recursiveprot"]
        );
        assert_eq!(m[1].root, "/mnt1");
        assert_eq!(m[1].mount_point, Path::new("/mnt2"));
        assert_eq!(m[1].fs_type, "ext3");
        assert_eq!(m[1].super_options, ["rw", "errors=continue"]);
    }

    #[test]
    fn undoes_octal_escapes_in_root_mount_point_and_options() {
        let m = parse(
            "50 31 0:40 /x\\040y /a\\040b\\011c\\134d rw shared:7 - fuse.my\\040fs src rw,user_id=0,opt=a\\054b\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].root, "/x y");
        assert_eq!(m[0].mount_point, Path::new("/a b\tc\\d"));
        assert_eq!(m[0].fs_type, "fuse.my fs");
        assert_eq!(m[0].super_options, ["rw", "user_id=0", "opt=a,b"]);
    }

    #[test]
    fn keeps_a_mount_point_that_is_not_utf8() {
        let m = parse("51 31 0:41 / /mnt/\\377 rw - tmpfs tmpfs rw\n");
        assert_eq!(m[0].mount_point.as_os_str().as_bytes(), b"/mnt/\xff");
    }

    #[test]
    fn leaves_backslashes_that_are_not_escapes() {
        assert_eq!(unescape("a\\b"), b"a\\b");
        assert_eq!(unescape("a\\08"), b"a\\08");
        assert_eq!(unescape("\\777"), b"\\777", "more than a byte");
        assert_eq!(unescape("end\\04"), b"end\\04");
        assert_eq!(unescape("end\\040"), b"end ");
    }

    #[test]
    fn leaves_out_lines_without_separator_or_fields() {
        assert!(parse("").is_empty());
        assert!(parse("35 31 0:32 / /x rw cgroup cgroup rw\n").is_empty());
        assert!(parse("35 31 0:32 / /x rw - cgroup cgroup\n").is_empty());
        assert!(parse("35 31 0:32 /\n").is_empty());
    }
}
