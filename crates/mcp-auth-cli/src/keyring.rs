//! The OS keyring as the home of the store key (the `keyring` feature): Secret Service on
//! Linux, the Keychain on macOS, Credential Manager on Windows.

use std::sync::Arc;

use keyring_core::CredentialStore;

/// The OS keyring, connected to and installed as `keyring-core`'s default store on first use;
/// `None` when there is none (no D-Bus session or no Secret Service on a headless Linux
/// machine, for one), and the store key then stays in its file.
///
/// Called by `FileStore::open_auto_with` only when the store has no key file, so commands
/// on a store with a key file never pay for it. With the key in the keyring, every command
/// pays one connection and one lookup (on Linux a D-Bus session with the Secret Service and
/// a key exchange: milliseconds, more if the keyring must first be started or unlocked).
pub fn os_keyring() -> Option<Arc<CredentialStore>> {
    if let Some(store) = keyring_core::get_default_store() {
        return Some(store);
    }
    match platform_store() {
        Ok(store) => {
            tracing::debug!(vendor = %store.vendor(), "connected to the OS keyring");
            keyring_core::set_default_store(Arc::clone(&store));
            Some(store)
        }
        Err(error) => {
            tracing::debug!(%error, "no OS keyring; the store key stays in a file");
            None
        }
    }
}

#[cfg(target_os = "linux")]
fn platform_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(zbus_secret_service_keyring_store::Store::new()?)
}

#[cfg(target_os = "macos")]
fn platform_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(apple_native_keyring_store::keychain::Store::new()?)
}

#[cfg(target_os = "windows")]
fn platform_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Ok(windows_native_keyring_store::Store::new()?)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
fn platform_store() -> keyring_core::Result<Arc<CredentialStore>> {
    Err(keyring_core::Error::NotSupportedByStore(
        "no OS keyring support on this platform".to_owned(),
    ))
}
