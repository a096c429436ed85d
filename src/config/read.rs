//! The bounded, safe read of the configuration file.

use std::path::Path;

use super::{ConfigError, MAX_CONFIG_BYTES};
use crate::store::{LastLink, StoreError, read_file};

/// Reads the configuration file through the store's safe reader: a symlink to it
/// is fine (configuration management often makes one), but what it leads to must
/// be a regular file, the open does not block on a FIFO, and at most
/// [`MAX_CONFIG_BYTES`] are read whatever `stat` said.
pub(super) fn read_bounded(path: &Path) -> Result<(String, std::fs::Metadata), ConfigError> {
    let read_err = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let (data, meta) = match read_file(path, MAX_CONFIG_BYTES, LastLink::Follow) {
        Ok(Some(found)) => found,
        Ok(None) => return Err(read_err(std::io::Error::from_raw_os_error(libc::ENOENT))),
        Err(StoreError::NotRegular { kind, .. }) => {
            return Err(ConfigError::NotRegular {
                path: path.to_owned(),
                kind,
            });
        }
        Err(StoreError::TooLarge { size, .. }) => {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        Err(StoreError::Io { source, .. }) => return Err(read_err(source)),
        Err(other) => return Err(read_err(std::io::Error::other(other.to_string()))),
    };
    let text = String::from_utf8(data).map_err(|_| {
        read_err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })?;
    Ok((text, meta))
}
