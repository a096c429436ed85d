//! User and group names to numeric ids, read from `/etc/passwd` and `/etc/group`
//! (the daemon runs as root on hosts whose accounts live there).

use std::path::{Path, PathBuf};

/// Which account database a name is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Group,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }

    /// The file under `/etc` that lists accounts of this kind.
    pub fn file(self) -> &'static str {
        match self {
            Kind::User => "passwd",
            Kind::Group => "group",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("unknown {} {name:?} (not in /etc/{})", kind.as_str(), kind.file())]
    Unknown { kind: Kind, name: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The id of user or group `name`; a number is taken as the id itself.
pub fn lookup(name: &str, kind: Kind) -> Result<u32, AccountError> {
    lookup_in(Path::new("/etc"), name, kind)
}

/// [`lookup`] in the account files of `etc`.
pub fn lookup_in(etc: &Path, name: &str, kind: Kind) -> Result<u32, AccountError> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let path = etc.join(kind.file());
    let text = std::fs::read_to_string(&path).map_err(|source| AccountError::Read {
        path: path.clone(),
        source,
    })?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let id = f.nth(1)?;
            (n == name).then(|| id.parse().ok())?
        })
        .next()
        .ok_or_else(|| AccountError::Unknown {
            kind,
            name: name.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_unknown_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("group"),
            "root:x:0:\nssl-cert:x:103:postgres\n",
        )
        .expect("group");
        std::fs::write(
            dir.path().join("passwd"),
            "www-data:x:33:33::/var/www:/bin/sh\n",
        )
        .expect("passwd");
        assert_eq!(
            lookup_in(dir.path(), "ssl-cert", Kind::Group).ok(),
            Some(103)
        );
        assert_eq!(lookup_in(dir.path(), "www-data", Kind::User).ok(), Some(33));
        assert_eq!(lookup_in(dir.path(), "4242", Kind::Group).ok(), Some(4242));
        let err = lookup_in(dir.path(), "nosuch", Kind::Group).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "unknown group \"nosuch\" (not in /etc/group)"
        );
        // A user name is not looked for among groups.
        assert!(lookup_in(dir.path(), "www-data", Kind::Group).is_err());
    }
}
