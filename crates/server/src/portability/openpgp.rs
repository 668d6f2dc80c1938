//! OpenPGP at the edges of an import or export: the file another vault handed over is
//! decrypted as it is read, and an export is encrypted as it is written, so no plaintext card
//! data ever reaches the disk. (rPGP, the `pgp` crate: pure Rust.)

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use pgp::composed::{Deserializable, Message, MessageBuilder, SignedPublicKey, SignedSecretKey};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{KeyDetails, Password};
use zeroize::Zeroizing;

use super::PortError;

/// The private key an import decrypts with, and its passphrase (empty: none).
pub struct DecryptionKey {
    key: SignedSecretKey,
    passphrase: Zeroizing<String>,
}

impl DecryptionKey {
    /// Reads an armored or binary private key (`key.asc`).
    ///
    /// # Errors
    /// [`PortError::Key`] when the file cannot be read or holds no usable private key.
    pub fn load(path: &Path, passphrase: Zeroizing<String>) -> Result<Self, PortError> {
        let file = std::fs::File::open(path).map_err(|e| PortError::io(path, e))?;
        let (key, _) = SignedSecretKey::from_reader_single(BufReader::new(file)).map_err(|e| {
            PortError::Key(format!(
                "{}: not an OpenPGP private key ({e})",
                path.display()
            ))
        })?;
        key.verify_bindings().map_err(|e| {
            PortError::Key(format!("{}: the key does not verify ({e})", path.display()))
        })?;
        Ok(Self { key, passphrase })
    }

    /// A reader of the plaintext of the message in `path`, decrypted (and decompressed) as it
    /// is read. Its integrity is checked when the end is read: a tampered message fails then.
    ///
    /// # Errors
    /// [`PortError::Decrypt`] when the file is no OpenPGP message, is not encrypted to this key,
    /// or the passphrase is wrong.
    pub fn open(&self, path: &Path) -> Result<Box<dyn BufRead + Send>, PortError> {
        let file = std::fs::File::open(path).map_err(|e| PortError::io(path, e))?;
        let (message, _) = Message::from_reader(BufReader::with_capacity(1 << 16, file))
            .map_err(|e| PortError::Decrypt(format!("not an OpenPGP message ({e})")))?;
        if !message.is_encrypted() {
            return Err(PortError::Decrypt(
                "the OpenPGP message is not encrypted".into(),
            ));
        }
        let password = Password::from(self.passphrase.as_str());
        let mut message = message.decrypt(&password, &self.key).map_err(|e| {
            PortError::Decrypt(format!(
                "not encrypted to this key, or a wrong passphrase ({e})"
            ))
        })?;
        if message.is_compressed() {
            message = message
                .decompress()
                .map_err(|e| PortError::Decrypt(format!("cannot decompress ({e})")))?;
        }
        Ok(Box::new(BufReader::with_capacity(1 << 16, message)))
    }
}

/// The public key an export is encrypted to.
pub struct Recipient {
    key: SignedPublicKey,
}

impl Recipient {
    /// Reads an armored or binary public key (`key.asc`).
    ///
    /// # Errors
    /// [`PortError::Key`] when the file cannot be read, holds no public key, or the key cannot
    /// encrypt.
    pub fn load(path: &Path) -> Result<Self, PortError> {
        let file = std::fs::File::open(path).map_err(|e| PortError::io(path, e))?;
        let (key, _) = SignedPublicKey::from_reader_single(BufReader::new(file)).map_err(|e| {
            PortError::Key(format!(
                "{}: not an OpenPGP public key ({e})",
                path.display()
            ))
        })?;
        key.verify_bindings().map_err(|e| {
            PortError::Key(format!("{}: the key does not verify ({e})", path.display()))
        })?;
        let recipient = Self { key };
        if recipient.encryption_subkey().is_none() && !recipient.key.algorithm().can_encrypt() {
            return Err(PortError::Key(format!(
                "{}: the key has no encryption key",
                path.display()
            )));
        }
        Ok(recipient)
    }

    /// The first subkey bound for encryption.
    fn encryption_subkey(&self) -> Option<&pgp::composed::SignedPublicSubKey> {
        self.key.public_subkeys.iter().find(|sub| {
            sub.key.algorithm().can_encrypt()
                && sub.signatures.iter().any(|sig| {
                    let flags = sig.key_flags();
                    flags.encrypt_comms() || flags.encrypt_storage()
                })
        })
    }

    /// Encrypts everything `plain` yields to this recipient into `out` (SEIPD v1, AES-256,
    /// the form every OpenPGP implementation reads), as it is read.
    ///
    /// # Errors
    /// [`PortError::Encrypt`] when encryption or writing fails.
    pub fn encrypt<R: Read, W: Write>(
        &self,
        plain: R,
        out: W,
        armor: bool,
    ) -> Result<(), PortError> {
        let mut rng = rand_pgp::thread_rng();
        let mut builder = MessageBuilder::from_reader("", plain)
            .seipd_v1(&mut rng, SymmetricKeyAlgorithm::AES256);
        let added = match self.encryption_subkey() {
            Some(sub) => builder.encrypt_to_key(&mut rng, sub),
            None => builder.encrypt_to_key(&mut rng, &self.key),
        };
        added.map_err(|e| PortError::Encrypt(e.to_string()))?;
        if armor {
            builder
                .to_armored_writer(&mut rng, Default::default(), out)
                .map_err(|e| PortError::Encrypt(e.to_string()))
        } else {
            builder
                .to_writer(&mut rng, out)
                .map_err(|e| PortError::Encrypt(e.to_string()))
        }
    }
}
