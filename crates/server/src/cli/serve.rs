//! `serve`: run the server until SIGTERM or Ctrl-C, then let in-flight requests finish.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::init::init;
use super::{CliError, VaultDir};

use crate::config::{Overrides, Settings};
use crate::crypto::MASTER_KEY_FILE;

pub(super) async fn serve(
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    config: Option<PathBuf>,
    init_first: bool,
) -> Result<(), CliError> {
    let settings = Settings::load(config.as_deref(), Overrides { data_dir, listen })?;
    if init_first && !settings.data_dir.join(MASTER_KEY_FILE).exists() {
        let vault = VaultDir {
            data_dir: settings.data_dir.clone(),
            database_url: settings
                .database_url
                .as_ref()
                .map(|u| u.expose().to_owned()),
        };
        init(&vault, false).await?;
    }
    crate::logging::init(settings.log_format, settings.log_level);
    // Before the first connection, so none is ever refused for a limit the system would lift.
    crate::http_server::raise_open_file_limit();
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| CliError::Listen(settings.listen, e))?;
    let ready = |endpoint| {
        // Printed once the vault is ready; harnesses that bind port 0 read the real address here.
        println!("cardvault listening on {endpoint}");
        let _ = std::io::stdout().flush();
    };
    crate::serve(listener, settings, ready, shutdown_signal()).await?;
    Ok(())
}

/// Completes at SIGTERM or Ctrl-C. The handlers are installed when this is called, not when
/// it is first awaited: the server awaits it only once it serves, after it has said it is ready,
/// and a signal in between would otherwise take its default action and kill the vault outright.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (terminate, interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let received = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = received(terminate) => {},
                () = received(interrupt) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown requested: finishing in-flight requests");
    }
}
