//! Paths other users may reach: reads that follow no symlink, never block on a FIFO
//! or device and stop at a bound; directories created with an exact mode whatever
//! the umask; an sshd-like ownership check; and a path below a web root that no
//! symlink can lead out of.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use super::{StoreError, io};

/// Largest file read back from an output directory; PEM files are a few KiB.
pub const MAX_OUTPUT_FILE_BYTES: u64 = 1024 * 1024;

/// What a file type is, for messages.
pub fn describe(ft: fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "a regular file"
    }
}

/// Whether [`read_file`] may follow a symlink as the last component of the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastLink {
    /// Output directories: a planted link is refused (`O_NOFOLLOW`).
    Refuse,
    /// The configuration file: configuration management often links it.
    Follow,
}

/// Reads the regular file at `path`, at most `max` bytes; `None` when it does not
/// exist. A symlink as last component, a FIFO, a device or a directory is refused
/// without blocking: the open is `O_NOFOLLOW | O_NONBLOCK` and the type is taken
/// from the opened descriptor, so nothing can be swapped in between.
pub fn read_regular(path: &Path, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(read_file(path, max, LastLink::Refuse)?.map(|(data, _)| data))
}

/// [`read_regular`], with the choice of following a last-component symlink, and
/// the opened file's metadata.
pub fn read_file(
    path: &Path,
    max: u64,
    last: LastLink,
) -> Result<Option<(Vec<u8>, fs::Metadata)>, StoreError> {
    let nofollow = match last {
        LastLink::Refuse => libc::O_NOFOLLOW,
        LastLink::Follow => 0,
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(nofollow | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && last == LastLink::Refuse => {
            return Err(StoreError::NotRegular {
                path: path.to_owned(),
                kind: "a symbolic link",
            });
        }
        Err(e) => return Err(io(path, "open")(e)),
    };
    let meta = file.metadata().map_err(io(path, "stat"))?;
    if !meta.file_type().is_file() {
        return Err(StoreError::NotRegular {
            path: path.to_owned(),
            kind: describe(meta.file_type()),
        });
    }
    let too_large = |size| StoreError::TooLarge {
        path: path.to_owned(),
        size,
        max,
    };
    if meta.len() > max {
        return Err(too_large(meta.len()));
    }
    // Sized from the stat (one byte more, so the read that finds the end needs no
    // growth): an empty Vec made `read_to_end` start at 32 bytes and double, seven
    // reads for a certificate, now two. The bound holds even for a file that grows
    // after the stat.
    let mut data = Vec::with_capacity(usize::try_from(meta.len() + 1).unwrap_or(0));
    file.take(max + 1)
        .read_to_end(&mut data)
        .map_err(io(path, "read"))?;
    if data.len() as u64 > max {
        return Err(too_large(data.len() as u64));
    }
    Ok(Some((data, meta)))
}

/// [`read_regular`] of a text file cas-renewd wrote: in an output directory, or a
/// key or chain under the state directory.
pub fn read_output_text(path: &Path) -> Result<Option<String>, StoreError> {
    read_regular(path, MAX_OUTPUT_FILE_BYTES)?
        .map(|d| {
            String::from_utf8(d).map_err(|_| {
                io(path, "read")(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not UTF-8 text",
                ))
            })
        })
        .transpose()
}

/// Creates the single directory `dir` with exactly `mode`. The mode is set again
/// through a descriptor opened without following links, so neither the umask nor
/// a link swapped in after `mkdir` decides it. An existing real directory is fine
/// and keeps its mode.
pub fn make_dir(dir: &Path, mode: u32) -> Result<(), StoreError> {
    match DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => {
            let d = open_dir_nofollow(dir)?;
            d.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io(dir, "set mode"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let m = fs::symlink_metadata(dir).map_err(io(dir, "stat"))?;
            if m.file_type().is_dir() {
                Ok(())
            } else {
                Err(StoreError::NotADirectory {
                    path: dir.to_owned(),
                    kind: describe(m.file_type()),
                })
            }
        }
        Err(e) => Err(io(dir, "create directory")(e)),
    }
}

fn open_dir_nofollow(dir: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(dir)
        .map_err(io(dir, "open directory"))
}

/// Creates `dir` and each missing parent, every one with exactly `mode`; parts
/// that exist are left as they are (an administrator's symlinked `/var/lib` is
/// followed; [`check_dir_secure`] decides whether the result can be trusted).
pub fn create_dir_tree(dir: &Path, mode: u32) -> Result<(), StoreError> {
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(m) => {
                return Err(StoreError::NotADirectory {
                    path: cur.to_owned(),
                    kind: describe(m.file_type()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) => return Err(io(cur, "stat")(e)),
        }
    }
    for d in missing.into_iter().rev() {
        make_dir(d, mode)?;
    }
    Ok(())
}

/// Refuses a directory that a user other than root or `owner` could change, the
/// way sshd's StrictModes does: `dir` and every ancestor, both as written and
/// after resolving symlinks, must be owned by root, the daemon's own user or
/// `owner`, and not group- or
/// world-writable (an ancestor may be when it has the sticky bit, like `/tmp`).
pub fn check_dir_secure(dir: &Path, owner: Option<u32>) -> Result<(), StoreError> {
    let real = fs::canonicalize(dir).map_err(io(dir, "resolve"))?;
    // Like sshd's StrictModes, the user the daemon runs as may own the tree too
    // (a dedicated service user, or a developer running the tests).
    let me = effective_uid();
    for (top, chain) in [(real.as_path(), real.as_path()), (dir, dir)] {
        for p in chain.ancestors().filter(|p| !p.as_os_str().is_empty()) {
            let m = fs::metadata(p).map_err(io(p, "stat"))?;
            let uid = m.uid();
            if uid != 0 && Some(uid) != owner && Some(uid) != me {
                return Err(StoreError::InsecureDir {
                    path: p.to_owned(),
                    why: format!(
                        "is owned by uid {uid}, not root, the daemon's user or output.owner"
                    ),
                    fix: format!("chown root {}", p.display()),
                });
            }
            let mode = m.mode();
            let sticky_ancestor = p != top && mode & 0o1000 != 0;
            if mode & 0o022 != 0 && !sticky_ancestor {
                return Err(StoreError::InsecureDir {
                    path: p.to_owned(),
                    why: format!(
                        "is writable by group or others (mode {:04o})",
                        mode & 0o7777
                    ),
                    fix: format!("chmod go-w {}", p.display()),
                });
            }
        }
    }
    Ok(())
}

/// The process's effective uid without `unsafe`: `/proc/self` belongs to it.
fn effective_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The real path of `rel` (a relative file path) below `root`, for writing: the
/// directories between are created with `mode` when missing, and a symlink among
/// them is followed only when it stays inside `root`. The file name itself is not
/// resolved; the atomic write replaces whatever entry has that name.
pub fn resolve_under(root: &Path, rel: &Path, mode: u32) -> Result<PathBuf, StoreError> {
    let name = match rel.file_name() {
        Some(n) if rel.components().all(|c| matches!(c, Component::Normal(_))) => n,
        _ => {
            return Err(StoreError::Escapes {
                path: root.join(rel),
                target: root.to_owned(),
            });
        }
    };
    create_dir_tree(root, mode)?;
    let root_real = fs::canonicalize(root).map_err(io(root, "resolve"))?;
    let mut cur = root_real.clone();
    for c in rel.parent().into_iter().flat_map(Path::components) {
        let next = cur.join(c);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.file_type().is_dir() => cur = next,
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::canonicalize(&next).map_err(io(&next, "resolve"))?;
                if !target.starts_with(&root_real) {
                    return Err(StoreError::Escapes { path: next, target });
                }
                let tm = fs::metadata(&target).map_err(io(&target, "stat"))?;
                if !tm.is_dir() {
                    return Err(StoreError::NotADirectory {
                        path: next,
                        kind: describe(tm.file_type()),
                    });
                }
                cur = target;
            }
            Ok(m) => {
                return Err(StoreError::NotADirectory {
                    path: next,
                    kind: describe(m.file_type()),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                make_dir(&next, mode)?;
                cur = next;
            }
            Err(e) => return Err(io(&next, "stat")(e)),
        }
    }
    Ok(cur.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mkfifo(p: &Path) {
        let st = std::process::Command::new("mkfifo")
            .arg(p)
            .status()
            .expect("mkfifo runs");
        assert!(st.success());
    }

    #[test]
    fn read_regular_refuses_links_fifos_devices_and_large_files() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = d.path().join("target");
        fs::write(&target, "secret").expect("write");
        let link = d.path().join("link");
        symlink(&target, &link).expect("symlink");
        let fifo = d.path().join("fifo");
        mkfifo(&fifo);
        let big = d.path().join("big");
        fs::write(&big, vec![b'x'; 11]).expect("write");

        assert_eq!(
            read_regular(&target, 10).expect("read"),
            Some(b"secret".to_vec())
        );
        assert_eq!(read_regular(&d.path().join("none"), 10).expect("ok"), None);
        for (p, kind) in [
            (&link, "symbolic link"),
            (&fifo, "FIFO"),
            (&PathBuf::from("/dev/zero"), "character device"),
            (&d.path().to_owned(), "directory"),
        ] {
            let e = read_regular(p, 10).expect_err("refused").to_string();
            assert!(e.contains(kind) && e.contains(&*p.to_string_lossy()), "{e}");
        }
        let e = read_regular(&big, 10).expect_err("too large").to_string();
        assert!(e.contains("more than 10 bytes"), "{e}");
    }

    #[test]
    fn directories_get_their_mode_whatever_the_umask() {
        let d = tempfile::tempdir().expect("tempdir");
        let deep = d.path().join("a/b/c");
        create_dir_tree(&deep, 0o750).expect("create");
        for p in ["a", "a/b", "a/b/c"] {
            let m = fs::metadata(d.path().join(p)).expect("stat").mode() & 0o7777;
            assert_eq!(m, 0o750, "{p}");
        }
        // A non-directory in the way is an error, not a silent success.
        fs::write(d.path().join("f"), "").expect("write");
        assert!(create_dir_tree(&d.path().join("f/x"), 0o700).is_err());
    }

    #[test]
    fn insecure_directories_are_named_with_the_fix() {
        let d = tempfile::tempdir().expect("tempdir");
        let out = d.path().join("out");
        create_dir_tree(&out, 0o755).expect("create");
        check_dir_secure(&out, None).expect("root-owned 0755 is fine");

        fs::set_permissions(&out, fs::Permissions::from_mode(0o775)).expect("chmod");
        let e = check_dir_secure(&out, None).expect_err("group-writable");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("chmod go-w {}", out.display())),
            "{msg}"
        );
        // The directory itself may not rely on the sticky bit.
        fs::set_permissions(&out, fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert!(check_dir_secure(&out, None).is_err());

        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::chown(d.path(), Some(65534), None).expect("chown");
        let msg = check_dir_secure(&out, None)
            .expect_err("parent owned by nobody")
            .to_string();
        assert!(
            msg.contains(&format!("chown root {}", d.path().display()))
                && msg.contains("uid 65534"),
            "{msg}"
        );
        check_dir_secure(&out, Some(65534)).expect("the configured owner may own it");
        std::os::unix::fs::chown(d.path(), Some(0), None).expect("chown back");

        // A symlinked output directory is judged by where it leads, too.
        let elsewhere = d.path().join("elsewhere");
        create_dir_tree(&elsewhere, 0o777).expect("create");
        let link = d.path().join("link");
        symlink(&elsewhere, &link).expect("symlink");
        let msg = check_dir_secure(&link, None)
            .expect_err("target is world-writable")
            .to_string();
        assert!(msg.contains(&*elsewhere.to_string_lossy()), "{msg}");
    }

    #[test]
    fn a_path_below_the_web_root_cannot_be_led_outside() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path().join("www");
        let outside = d.path().join("outside");
        fs::create_dir_all(&root).expect("mkdir");
        fs::create_dir_all(&outside).expect("mkdir");
        let rel = Path::new(".well-known/pki-validation/fileauth.txt");

        // Missing directories are created, with the mode asked for.
        let p = resolve_under(&root, rel, 0o755).expect("resolves");
        assert_eq!(
            p,
            fs::canonicalize(&root)
                .expect("real")
                .join(".well-known/pki-validation/fileauth.txt")
        );
        let m = fs::metadata(root.join(".well-known")).expect("stat").mode() & 0o7777;
        assert_eq!(m, 0o755);

        // A link inside the tree is followed; one leading outside is refused.
        fs::remove_dir_all(root.join(".well-known")).expect("rm");
        fs::create_dir_all(root.join("real-wk")).expect("mkdir");
        symlink(root.join("real-wk"), root.join(".well-known")).expect("symlink");
        let p = resolve_under(&root, rel, 0o755).expect("inside is fine");
        assert!(
            p.starts_with(fs::canonicalize(&root).expect("real")),
            "{p:?}"
        );

        fs::remove_file(root.join(".well-known")).expect("rm");
        symlink(&outside, root.join(".well-known")).expect("symlink");
        let msg = resolve_under(&root, rel, 0o755)
            .expect_err("outside is refused")
            .to_string();
        assert!(msg.contains("outside"), "{msg}");
        assert_eq!(
            fs::read_dir(&outside).expect("ls").count(),
            0,
            "nothing created outside"
        );
    }
}
