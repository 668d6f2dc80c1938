//! A SoftHSM2 token of a test's own (Debian's `softhsm2`): its own token directory and
//! configuration, so tests never share or leave keys behind.

use std::path::PathBuf;
use std::process::Command;

pub const TOKEN_LABEL: &str = "cardvault-test";
pub const PIN: &str = "4711-test-pin";
/// The master key's label when the whole suite runs with the PKCS#11 provider.
pub const SUITE_KEY_LABEL: &str = "cardvault-master";

/// The module: `CARDVAULT_TEST_PKCS11_MODULE`, else where Debian's package puts it.
pub fn module() -> String {
    std::env::var("CARDVAULT_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".to_owned())
}

pub struct SoftHsm {
    dir: tempfile::TempDir,
}

impl SoftHsm {
    /// A fresh, initialized token (no key in it yet).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.path().join("tokens").display()
            ),
        )
        .unwrap();
        let hsm = Self { dir };
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", hsm.conf())
            .args(["--init-token", "--free", "--label", TOKEN_LABEL])
            .args(["--pin", PIN, "--so-pin", "so-pin-0815"])
            .output()
            .unwrap_or_else(|e| {
                panic!("softhsm2-util: {e}: install SoftHSM2 (Debian: apt-get install softhsm2)")
            });
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        hsm
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    /// What reaches the token (module, token, PIN), without choosing it as the master key.
    pub fn token_env(&self) -> Vec<(String, String)> {
        [
            ("SOFTHSM2_CONF", self.conf().display().to_string()),
            ("CARDVAULT_PKCS11_MODULE", module()),
            ("CARDVAULT_PKCS11_TOKEN_LABEL", TOKEN_LABEL.to_owned()),
            ("CARDVAULT_PKCS11_PIN", PIN.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The settings that make key `key_label` of this token the master key.
    pub fn master_env(&self, key_label: &str) -> Vec<(String, String)> {
        let mut env = self.token_env();
        env.push(("CARDVAULT_KEY_PROVIDER".into(), "pkcs11".into()));
        env.push(("CARDVAULT_PKCS11_KEY_LABEL".into(), key_label.into()));
        env
    }

    /// How the token describes the secret keys labelled `key_label` (OpenSC's `pkcs11-tool`,
    /// talking to the token itself): one block per key, with its `Usage:` and `Access:` lines.
    pub fn describe_keys(&self, key_label: &str) -> Vec<String> {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", self.conf())
            .args(["--module", &module(), "--token-label", TOKEN_LABEL])
            .args([
                "--login",
                "--pin",
                PIN,
                "--list-objects",
                "--type",
                "secrkey",
            ])
            .output()
            .unwrap_or_else(|e| panic!("pkcs11-tool: {e}: install OpenSC (Debian: opensc)"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split("Secret Key Object")
            .filter(|block| {
                block
                    .lines()
                    .any(|l| l.trim() == format!("label:      {key_label}"))
            })
            .map(str::to_owned)
            .collect()
    }
}
