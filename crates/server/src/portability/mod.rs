//! Taking cards in from another vault's export (`cardvault import`) and giving them back out
//! (`cardvault export`): OpenPGP-encrypted files read and written as streams, every record
//! validated as `POST /tokenize` validates one, and no plaintext card data on disk.

pub mod export;
pub mod import;
pub mod layout;
pub mod openpgp;
pub mod records;

use std::path::{Path, PathBuf};

use crate::crypto::CryptoError;
use crate::store::StoreError;

/// The layout of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A header line naming the columns, then one record per row.
    Csv,
    /// One JSON object per line (the layout `cardvault export` writes).
    Jsonl,
}

/// Why an import or export stopped. No message carries card data: the inputs' values are
/// never put in one.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{0}")]
    Input(String),
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Key(String),
    #[error("cannot decrypt the input: {0}; nothing was imported")]
    Decrypt(String),
    #[error(
        "the input fails its integrity check (tampered with, cut short, or not encrypted to this key): {0}; nothing was imported"
    )]
    Integrity(String),
    #[error("cannot encrypt the export: {0}")]
    Encrypt(String),
    #[error("the database")]
    Store(#[from] StoreError),
    #[error("sealing")]
    Crypto(#[from] CryptoError),
}

impl PortError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
