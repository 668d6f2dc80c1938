//! A master key inside a PKCS#11 token (an HSM, or SoftHSM2 in tests).
//!
//! The key is an AES-256 object generated in the token as sensitive and not extractable: it never
//! leaves it. Data keys and the root secret are wrapped by `C_Encrypt` with AES-GCM (a random
//! 96-bit IV stored in front, the wrapped secret's purpose as associated data) and unwrapped by
//! `C_Decrypt`; the HSM sees a few calls at start and at each key rotation, none per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use cryptoki::context::Function;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::crypto::{CryptoError, MasterKeyProvider};

const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// Where the key is: `CARDVAULT_PKCS11_*`.
pub struct Pkcs11Settings {
    /// The token's PKCS#11 library (`/usr/lib/softhsm/libsofthsm2.so` for SoftHSM2).
    pub module: PathBuf,
    pub token_label: String,
    pub pin: Zeroizing<String>,
    pub key_label: String,
}

pub struct Pkcs11Key {
    context: Pkcs11,
    slot: Slot,
    pin: Zeroizing<String>,
    token_label: String,
    key_label: String,
    /// One logged-in session, opened again after an error that may have ended it (a token
    /// removed and put back, an HSM restarted). A PKCS#11 session is not for two threads at
    /// once; the calls are few and short.
    session: Mutex<Option<(Session, ObjectHandle)>>,
}

impl Pkcs11Key {
    /// Loads the module, finds the token and logs in, and finds the key; `create`: generates it
    /// in the token when there is none by that label.
    ///
    /// # Errors
    /// [`CryptoError::MasterKey`] saying which step failed.
    pub fn open(settings: &Pkcs11Settings, create: bool) -> Result<Self, CryptoError> {
        let failed = |step: &str, e: Pkcs11Error| {
            CryptoError::MasterKey(format!("PKCS#11: {step}: {}", describe(&e)))
        };
        let context = loaded_module(&settings.module)?;
        let mut slot = None;
        for candidate in context
            .get_slots_with_token()
            .map_err(|e| failed("list the slots", e))?
        {
            let info = context
                .get_token_info(candidate)
                .map_err(|e| failed("read a token's label", e))?;
            if info.label().trim_end() == settings.token_label {
                slot = Some(candidate);
                break;
            }
        }
        let slot = slot.ok_or_else(|| {
            CryptoError::MasterKey(format!(
                "PKCS#11: no token labelled `{}` in {}",
                settings.token_label,
                settings.module.display()
            ))
        })?;
        let key = Self {
            context,
            slot,
            pin: settings.pin.clone(),
            token_label: settings.token_label.clone(),
            key_label: settings.key_label.clone(),
            session: Mutex::new(None),
        };
        let (session, handle) = key.connect(create)?;
        *key.lock() = Some((session, handle));
        Ok(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Session, ObjectHandle)>> {
        // A panic while holding it leaves nothing half-done: the session is only used, not
        // changed, under the lock.
        self.session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A logged-in session and the key's handle.
    fn connect(&self, create: bool) -> Result<(Session, ObjectHandle), CryptoError> {
        let failed = |step: &str, e: Pkcs11Error| {
            CryptoError::MasterKey(format!(
                "PKCS#11 token `{}`: {step}: {}",
                self.token_label,
                describe(&e)
            ))
        };
        let session = self
            .context
            .open_rw_session(self.slot)
            .map_err(|e| failed("open a session", e))?;
        let pin = AuthPin::from(self.pin.as_str().to_owned());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(failed("log in", e)),
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
        ];
        let found = session
            .find_objects(&template)
            .map_err(|e| failed("find the key", e))?;
        let handle = match found.as_slice() {
            [one] => *one,
            [] if create => self.generate(&session)?,
            [] => {
                return Err(CryptoError::MasterKey(format!(
                    "PKCS#11 token `{}` holds no key labelled `{}`",
                    self.token_label, self.key_label
                )));
            }
            _ => {
                return Err(CryptoError::MasterKey(format!(
                    "PKCS#11 token `{}` holds {} keys labelled `{}`; give the master key a label of its own",
                    self.token_label,
                    found.len(),
                    self.key_label
                )));
            }
        };
        Ok((session, handle))
    }

    /// An AES-256 key made inside the token, which it will not let out.
    fn generate(&self, session: &Session) -> Result<ObjectHandle, CryptoError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            // Nothing else: it cannot wrap other keys out of the token, sign or derive.
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Derive(false),
        ];
        let handle = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| {
                CryptoError::MasterKey(format!(
                    "PKCS#11 token `{}`: cannot generate the key `{}`: {}",
                    self.token_label,
                    self.key_label,
                    describe(&e)
                ))
            })?;
        tracing::info!(
            token = %self.token_label,
            key = %self.key_label,
            "generated the master key in the PKCS#11 token"
        );
        Ok(handle)
    }

    /// Runs `operation` with the session, connecting first if an earlier error dropped it.
    fn with_session<T>(
        &self,
        operation: impl Fn(&Session, ObjectHandle) -> Result<T, Pkcs11Error>,
    ) -> Result<T, CryptoError> {
        let mut guard = self.lock();
        if guard.is_none() {
            *guard = Some(self.connect(false)?);
        }
        let Some((session, handle)) = guard.as_ref() else {
            unreachable!("connected just above");
        };
        operation(session, *handle).map_err(|e| {
            if is_bad_ciphertext(&e) {
                CryptoError::Decrypt
            } else {
                // The session may be gone with the token: the next call opens a new one.
                *guard = None;
                CryptoError::MasterKey(format!(
                    "PKCS#11 token `{}`: {}",
                    self.token_label,
                    describe(&e)
                ))
            }
        })
    }
}

impl MasterKeyProvider for Pkcs11Key {
    fn describe(&self) -> String {
        format!(
            "the key `{}` in PKCS#11 token `{}`",
            self.key_label, self.token_label
        )
    }

    fn wrap(&self, secret: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut iv = [0u8; IV_LEN];
        SystemRandom::new()
            .fill(&mut iv)
            .map_err(|_| CryptoError::Random)?;
        let sealed = self.with_session(|session, key| {
            let mut iv = iv;
            let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
            session.encrypt(&Mechanism::AesGcm(params), key, secret)
        })?;
        let mut out = Vec::with_capacity(IV_LEN + sealed.len());
        out.extend_from_slice(&iv);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let Some((iv, sealed)) = wrapped.split_at_checked(IV_LEN) else {
            return Err(CryptoError::Decrypt);
        };
        let plain = self.with_session(|session, key| {
            let mut iv: [u8; IV_LEN] = iv.try_into().map_err(Pkcs11Error::TryFromSlice)?;
            let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
            session.decrypt(&Mechanism::AesGcm(params), key, sealed)
        })?;
        Ok(Zeroizing::new(plain))
    }
}

/// The module at `path`, loaded and initialized once per process: a second `C_Initialize` is
/// refused, and a context's drop finalizes the module under every other user of it (a rewrap
/// holds two keys of one token).
fn loaded_module(path: &Path) -> Result<Pkcs11, CryptoError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut modules = MODULES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(context) = modules.get(path) {
        return Ok(context.clone());
    }
    let context = Pkcs11::new(path).map_err(|e| {
        CryptoError::MasterKey(format!(
            "PKCS#11: cannot load the module {}: {e}",
            path.display()
        ))
    })?;
    context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| {
            CryptoError::MasterKey(format!(
                "PKCS#11: cannot initialize the module {}: {}",
                path.display(),
                describe(&e)
            ))
        })?;
    modules.insert(path.to_path_buf(), context.clone());
    Ok(context)
}

/// What the token said, briefly (cryptoki's own text for a return value is a paragraph).
fn describe(e: &Pkcs11Error) -> String {
    match e {
        Pkcs11Error::Pkcs11(rv, function) => format!("{function:?} returned {rv:?}"),
        other => other.to_string(),
    }
}

/// A ciphertext that is not this key's (or was altered): not a fault of the token. SoftHSM2
/// answers a GCM tag that does not verify with `CKR_GENERAL_ERROR` rather than
/// `CKR_ENCRYPTED_DATA_INVALID`, so that counts too, from `C_Decrypt` only.
fn is_bad_ciphertext(e: &Pkcs11Error) -> bool {
    matches!(
        e,
        Pkcs11Error::Pkcs11(
            RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::GeneralError
                | RvError::FunctionFailed,
            Function::Decrypt
        )
    )
}
