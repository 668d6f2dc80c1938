//! Keys over the vault's life: every instance follows the stored data keys as a rotation adds,
//! activates and retires them; the rotation job; the master key's providers and its rotation
//! (rewrap).

pub mod master;
pub mod pkcs11;
pub mod rewrap;
pub mod rotation;

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::crypto::Keyring;
use crate::store::Store;

/// Keeps `keyring` in step with the stored data keys, every `interval`, until it is dropped.
pub fn follow_stored_keys(store: Arc<dyn Store>, keyring: &Arc<Keyring>, interval: Duration) {
    let keyring: Weak<Keyring> = Arc::downgrade(keyring);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(keyring) = keyring.upgrade() else {
                return;
            };
            let outcome = match store.data_keys().await {
                Ok(wrapped) => keyring
                    .refresh(&wrapped)
                    .map_err(|e| crate::error_chain::chain(&e)),
                Err(e) => Err(crate::error_chain::chain(&e)),
            };
            // The keys in use stay as they were; the next round tries again.
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "cannot reload the data keys");
            }
        }
    });
}
