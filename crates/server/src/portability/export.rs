//! `cardvault export`: a project's live tokens with their card or bank data, as JSON lines
//! encrypted to a recipient's OpenPGP key as they are written. The plaintext exists only in
//! memory, a page at a time, in buffers wiped after use.
//!
//! The layout (one object per line; `import --format jsonl` reads it back with no mapping):
//! `{"id": "tok_…", "type": "card", "number": "…", "exp_month": "07", "exp_year": "2031",
//!   "first_name": "…", "last_name": "…", "expires_at": "2031-01-31T00:00:00Z",
//!   "allowed_destinations": ["api.stripe.com"]}` and
//! `{"id": "tok_…", "type": "bank", "account_number": "…", "routing_number": "…", …}`
//! (names, `expires_at` and `allowed_destinations` only when the token has them; the last two
//! as `POST /tokenize` takes them).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use zeroize::Zeroizing;

use super::PortError;
use super::openpgp::Recipient;
use crate::clock::rfc3339;
use crate::crypto::Keyring;
use crate::store::{Project, Store};
use crate::tokens::{AllowedDestinations, TokenData};

/// Tokens read (and opened) per query.
const PAGE: u32 = 1000;

pub struct Options {
    pub output: PathBuf,
    pub armor: bool,
}

/// One line of the export. Field names are a documented format: never rename them.
#[derive(Serialize)]
struct Line<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp_month: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp_year: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_destinations: Option<Vec<String>>,
}

/// Exports the project's live tokens; returns how many. `progress(done, total)` after each page.
///
/// # Errors
/// [`PortError`] when the output cannot be written, encryption fails, a token does not open,
/// or the database fails; the partial output is removed.
pub async fn run(
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    project: &Project,
    recipient: Arc<Recipient>,
    options: Options,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<u64, PortError> {
    let result = write(store, keyring, project, recipient, &options, progress).await;
    if result.is_err() {
        let _ = std::fs::remove_file(&options.output);
    }
    result
}

async fn write(
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    project: &Project,
    recipient: Arc<Recipient>,
    options: &Options,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<u64, PortError> {
    let total = store.live_token_count(&project.id).await?;
    let file = create_private(&options.output)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Zeroizing<Vec<u8>>>(2);
    let encrypting = {
        let (path, armor) = (options.output.clone(), options.armor);
        tokio::task::spawn_blocking(move || {
            let mut out = std::io::BufWriter::new(file);
            recipient.encrypt(ChannelReader::new(rx), &mut out, armor)?;
            let file = out
                .into_inner()
                .map_err(|e| PortError::io(&path, e.into_error()))?;
            file.sync_all().map_err(|e| PortError::io(&path, e))
        })
    };
    let mut done = 0u64;
    let mut after = String::new();
    let mut failed: Result<(), PortError> = Ok(());
    loop {
        let page = match store.live_tokens(&project.id, &after, PAGE).await {
            Ok(page) => page,
            Err(e) => {
                failed = Err(e.into());
                break;
            }
        };
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        let mut chunk = Zeroizing::new(Vec::with_capacity(page.len() * 256));
        for token in &page {
            let (data, allowed) =
                match TokenData::open_with_rule(&keyring, &token.sealed, &project.id, &token.id) {
                    Ok(opened) => opened,
                    Err(e) => {
                        failed = Err(e.into());
                        break;
                    }
                };
            line(
                &token.id,
                &data,
                token.expires_at,
                allowed.as_ref(),
                &mut chunk,
            );
        }
        if failed.is_err() {
            break;
        }
        done += page.len() as u64;
        if tx.send(chunk).await.is_err() {
            // The encryption ended early; it reports why.
            break;
        }
        progress(done, total.max(done));
    }
    drop(tx);
    let encrypted = encrypting
        .await
        .map_err(|e| PortError::Encrypt(format!("the encrypting thread failed: {e}")))?;
    failed?;
    encrypted?;
    Ok(done)
}

/// Appends a token's line to `out`.
fn line(
    id: &str,
    data: &TokenData,
    expires_at: Option<i64>,
    allowed: Option<&AllowedDestinations>,
    out: &mut Vec<u8>,
) {
    let mut line = Line {
        id,
        kind: "card",
        number: None,
        exp_month: None,
        exp_year: None,
        account_number: None,
        routing_number: None,
        first_name: None,
        last_name: None,
        expires_at: expires_at.map(rfc3339),
        allowed_destinations: allowed.map(AllowedDestinations::patterns),
    };
    let holder = match data {
        TokenData::Card {
            pan,
            expiry,
            holder,
        } => {
            line.number = Some(pan.expose_secret());
            line.exp_month = Some(expiry.month());
            line.exp_year = Some(expiry.year());
            holder
        }
        TokenData::Bank {
            account,
            routing,
            holder,
        } => {
            line.kind = "bank";
            line.account_number = Some(account.expose_secret());
            line.routing_number = Some(routing.as_str());
            holder
        }
    };
    line.first_name = holder.first_name.as_deref();
    line.last_name = holder.last_name.as_deref();
    // Writing into a Vec cannot fail, and every value is a string.
    if serde_json::to_writer(&mut *out, &line).is_ok() {
        out.push(b'\n');
    }
}

/// The output file, readable by its owner only (it is encrypted, but still the cards).
fn create_private(path: &Path) -> Result<std::fs::File, PortError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|e| PortError::io(path, e))
}

/// The plaintext as the encryption reads it: chunks handed over by the database side, each
/// wiped once read.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Zeroizing<Vec<u8>>>,
    chunk: Zeroizing<Vec<u8>>,
    at: usize,
}

impl ChannelReader {
    fn new(rx: tokio::sync::mpsc::Receiver<Zeroizing<Vec<u8>>>) -> Self {
        Self {
            rx,
            chunk: Zeroizing::new(Vec::new()),
            at: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.chunk.len() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.at = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
