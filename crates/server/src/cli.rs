//! The `cardvault` command line: run the server, and administer a vault.
#![allow(
    clippy::print_stdout,
    reason = "the CLI's results (created keys, allowlists, the listening address) are its stdout"
)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use cardvault_core::destination::AllowRule;

use crate::admin::{self, CreatedKeys, NewProject};
use crate::config::{Overrides, Settings};
use crate::crypto::{MASTER_KEY_ENV, MASTER_KEY_FILE, MasterKey};
use crate::store::Database;
use crate::store::{Mode, Permissions, StoreError};
use crate::{StartError, load_keyring, open_store};

#[derive(Parser)]
#[command(
    name = "cardvault",
    version,
    about = "Self-hosted card-data vault with a detokenizing proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new vault: data directory, master key, database, a test project and its keys.
    Init {
        #[command(flatten)]
        vault: VaultDir,
        /// Print exactly one JSON object with the ids and keys.
        #[arg(long)]
        json: bool,
    },
    /// Create or update the database schema (the server also does it at start).
    Migrate {
        #[command(flatten)]
        vault: VaultDir,
    },
    /// Run the HTTP server.
    Serve {
        #[arg(long, env = "CARDVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// TOML settings file (environment variables override it).
        #[arg(long, env = "CARDVAULT_CONFIG")]
        config: Option<PathBuf>,
        /// Initialize the data directory first if it holds no vault yet (prints the keys once).
        #[arg(long)]
        init: bool,
    },
    /// Manage projects.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
    },
    /// Manage applications (API keys) of a project.
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
}

#[derive(Args)]
struct VaultDir {
    /// The vault's data directory (master key file; the SQLite database unless --database-url).
    #[arg(long, env = "CARDVAULT_DATA_DIR")]
    data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://…`) shared by several instances.
    #[arg(long, env = "CARDVAULT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl VaultDir {
    fn database(&self) -> Database {
        crate::database(&self.data_dir, self.database_url.as_deref(), 4)
    }
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project with its publishable key and a first application.
    Create {
        #[command(flatten)]
        vault: VaultDir,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "test")]
        mode: ModeArg,
        /// Return the existing token when the same card is tokenized again.
        #[arg(long)]
        deduplicate: bool,
        #[arg(long)]
        json: bool,
    },
    /// Add destinations to the project's allowlist; once it has one, the proxy may call only
    /// destinations it permits.
    Allow(ProjectRules),
    /// Remove destinations from the project's allowlist.
    Disallow(ProjectRules),
    /// Set the TLS settings the proxy uses for one processor host: extra trusted roots and a
    /// client certificate for processors that require mutual TLS.
    Tls {
        #[command(flatten)]
        vault: VaultDir,
        #[arg(long)]
        project: String,
        /// Host (`gateway.acquirer.example`) or subdomains (`*.acquirer.example`).
        #[arg(long)]
        host: String,
        /// PEM file of extra roots trusted for this host.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// PEM client certificate chain (with --client-key).
        #[arg(long, requires = "client_key")]
        client_cert: Option<PathBuf>,
        /// PEM private key of the client certificate; stored encrypted.
        #[arg(long, requires = "client_cert")]
        client_key: Option<PathBuf>,
        /// Remove the settings for this host instead.
        #[arg(long, conflicts_with_all = ["ca_file", "client_cert", "client_key"])]
        remove: bool,
    },
}

#[derive(Args)]
struct ProjectRules {
    #[command(flatten)]
    vault: VaultDir,
    #[arg(long)]
    project: String,
    /// Host patterns: `api.stripe.com`, `*.adyen.com`, optionally with a path prefix
    /// (`api.stripe.com/v1`).
    #[arg(required = true)]
    rules: Vec<String>,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Create an application and its secret API key.
    Create {
        #[command(flatten)]
        vault: VaultDir,
        #[arg(long)]
        project: String,
        #[arg(long)]
        name: String,
        /// Comma list of tokenization, provisioning, reveal.
        #[arg(long, default_value = "tokenization")]
        permissions: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Test,
    Live,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Test => Mode::Test,
            ModeArg::Live => Mode::Live,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cardvault: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> Result<(), CliError> {
    match command {
        Command::Init { vault, json } => init(&vault, json).await,
        Command::Migrate { vault } => {
            open_store(&vault.database(), false).await?;
            println!("schema up to date");
            Ok(())
        }
        Command::Serve {
            data_dir,
            listen,
            config,
            init: init_first,
        } => serve(data_dir, listen, config, init_first).await,
        Command::Project {
            command:
                ProjectCommand::Create {
                    vault,
                    name,
                    mode,
                    deduplicate,
                    json,
                },
        } => {
            let (store, keyring) = open_vault(&vault).await?;
            let new = NewProject {
                name: &name,
                mode: mode.into(),
                deduplicate,
            };
            let created = admin::create_project(store.as_ref(), &keyring, new).await?;
            print_keys(&created, json, "project created")
        }
        Command::Project {
            command: ProjectCommand::Allow(args),
        } => change_allowlist(args, true).await,
        Command::Project {
            command: ProjectCommand::Disallow(args),
        } => change_allowlist(args, false).await,
        Command::Project {
            command:
                ProjectCommand::Tls {
                    vault,
                    project,
                    host,
                    ca_file,
                    client_cert,
                    client_key,
                    remove,
                },
        } => {
            let files = TlsFiles {
                ca_file,
                client_cert,
                client_key,
            };
            set_destination_tls(&vault, &project, &host, files, remove).await
        }
        Command::App {
            command:
                AppCommand::Create {
                    vault,
                    project,
                    name,
                    permissions,
                    json,
                },
        } => {
            let permissions = Permissions::parse(&permissions).ok_or_else(|| {
                CliError::Usage(
                    "permissions are a comma list of tokenization, provisioning, reveal".into(),
                )
            })?;
            let (store, keyring) = open_vault(&vault).await?;
            let project = find_project(store.as_ref(), &project).await?;
            let created =
                admin::create_application(store.as_ref(), &keyring, &project, &name, permissions)
                    .await?;
            print_keys(&created, json, "application created")
        }
    }
}

async fn change_allowlist(args: ProjectRules, add: bool) -> Result<(), CliError> {
    let rules = args
        .rules
        .iter()
        .map(|r| AllowRule::parse(r).map(|rule| rule.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let (store, _) = open_vault(&args.vault).await?;
    let project = find_project(store.as_ref(), &args.project).await?;
    for rule in &rules {
        let changed = if add {
            store.add_destination_rule(&project.id, rule).await
        } else {
            store.remove_destination_rule(&project.id, rule).await
        };
        match changed {
            Ok(()) => {}
            Err(StoreError::NotFound) => {
                return Err(CliError::Usage(format!("{rule} is not in the allowlist")));
            }
            Err(e) => return Err(StartError::from(e).into()),
        }
    }
    let now = store
        .destination_rules(&project.id)
        .await
        .map_err(StartError::from)?;
    if now.is_empty() {
        println!(
            "{}: no allowlist (any destination the server policy permits)",
            project.id
        );
    } else {
        println!("{} may call:", project.id);
        for rule in now {
            println!("  {rule}");
        }
    }
    Ok(())
}

struct TlsFiles {
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

async fn set_destination_tls(
    vault: &VaultDir,
    project: &str,
    host: &str,
    files: TlsFiles,
    remove: bool,
) -> Result<(), CliError> {
    let rule = AllowRule::parse(host).map_err(|e| CliError::Usage(e.to_string()))?;
    let host = rule.to_string();
    if host.contains('/') {
        return Err(CliError::Usage("a TLS host takes no path".into()));
    }
    let (store, keyring) = open_vault(vault).await?;
    let project = find_project(store.as_ref(), project).await?;
    if remove {
        return match store.remove_destination_tls(&project.id, &host).await {
            Ok(()) => {
                println!("{}: TLS settings for {host} removed", project.id);
                Ok(())
            }
            Err(StoreError::NotFound) => {
                Err(CliError::Usage(format!("no TLS settings for {host}")))
            }
            Err(e) => Err(StartError::from(e).into()),
        };
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
    };
    let ca_pem = files.ca_file.as_deref().map(read).transpose()?;
    if let Some(pem) = &ca_pem {
        crate::upstream::add_pem_roots(&mut rustls::RootCertStore::empty(), pem)
            .map_err(CliError::Usage)?;
    }
    let cert_pem = files.client_cert.as_deref().map(read).transpose()?;
    let key_pem = files
        .client_key
        .as_deref()
        .map(read)
        .transpose()?
        .map(zeroize::Zeroizing::new);
    let client_key = match (&cert_pem, &key_pem) {
        (Some(cert), Some(key)) => {
            crate::upstream::check_client_identity(cert, key).map_err(CliError::Usage)?;
            let aad = crate::api::tls_key_aad(&project.id, &host);
            Some(
                keyring
                    .seal(key.as_bytes(), &aad)
                    .map_err(StartError::from)?,
            )
        }
        _ => None,
    };
    if ca_pem.is_none() && client_key.is_none() {
        return Err(CliError::Usage(
            "give --ca-file, or --client-cert with --client-key (or --remove)".into(),
        ));
    }
    let tls = crate::store::DestinationTls {
        host: host.clone(),
        ca_pem,
        client_cert_pem: cert_pem,
        client_key,
        updated_at_ms: crate::store::now_unix_ms(),
    };
    store
        .put_destination_tls(&project.id, &tls)
        .await
        .map_err(StartError::from)?;
    println!("{}: TLS settings for {host} saved", project.id);
    Ok(())
}

async fn find_project(
    store: &dyn crate::store::Store,
    id: &str,
) -> Result<crate::store::Project, CliError> {
    match store.project(id).await {
        Ok(p) => Ok(p),
        Err(StoreError::NotFound) => Err(CliError::Usage(format!("no project {id}"))),
        Err(e) => Err(StartError::from(e).into()),
    }
}

async fn serve(
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
    crate::logging::init(settings.log_format, &settings.log_level);
    // Before the first connection, so none is ever refused for a limit the system would lift.
    crate::http_server::raise_open_file_limit();
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    // Harnesses that bind port 0 read the real address from this line.
    println!("cardvault listening on http://{}", listener.local_addr()?);
    let _ = std::io::stdout().flush();
    crate::serve(listener, settings, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

async fn open_vault(
    vault: &VaultDir,
) -> Result<
    (
        std::sync::Arc<dyn crate::store::Store>,
        crate::crypto::Keyring,
    ),
    CliError,
> {
    let store = open_store(&vault.database(), false).await?;
    let master = MasterKey::load(&vault.data_dir).map_err(StartError::from)?;
    let keyring = load_keyring(store.as_ref(), &master).await?;
    Ok((store, keyring))
}

async fn init(vault: &VaultDir, json: bool) -> Result<(), CliError> {
    let data_dir = &vault.data_dir;
    let key_path = data_dir.join(MASTER_KEY_FILE);
    let database = vault.database();
    let sqlite_exists = matches!(&database, Database::Sqlite(path) if path.exists());
    if key_path.exists() || sqlite_exists {
        return Err(CliError::Usage(format!(
            "{} already holds a vault; refusing to touch it",
            data_dir.display()
        )));
    }
    create_private_dir(data_dir)?;
    // Instances that share a database share its master key: given in the environment, it is
    // used as is; otherwise a new one is written to the data directory.
    let (master, from_env) = match std::env::var(MASTER_KEY_ENV) {
        Ok(hex) => (
            MasterKey::from_hex(hex.trim()).map_err(StartError::from)?,
            true,
        ),
        Err(_) => (MasterKey::generate().map_err(StartError::from)?, false),
    };
    let store = open_store(&database, true).await?;
    if !store
        .data_keys()
        .await
        .map_err(StartError::from)?
        .is_empty()
    {
        return Err(CliError::Usage(
            "the database already holds a vault; refusing to touch it (give other instances its master key instead)".into(),
        ));
    }
    if !from_env {
        write_private_file(&key_path, master.to_hex().as_bytes())?;
    }
    let keyring = load_keyring(store.as_ref(), &master).await?;
    let new = NewProject {
        name: "default",
        mode: Mode::Test,
        deduplicate: false,
    };
    let created = admin::create_project(store.as_ref(), &keyring, new).await?;
    print_keys(
        &created,
        json,
        &format!("vault initialized in {}", data_dir.display()),
    )
}

fn print_keys(created: &CreatedKeys, json: bool, title: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    if json {
        let text = serde_json::to_string(created).map_err(|e| CliError::Usage(e.to_string()))?;
        writeln!(out, "{text}")?;
        return Ok(());
    }
    writeln!(out, "{title}")?;
    writeln!(out, "  project:         {}", created.project_id)?;
    writeln!(out, "  application:     {}", created.application_id)?;
    if let Some(pk) = &created.publishable_key {
        writeln!(out, "  publishable key: {pk}")?;
    }
    writeln!(out, "  API key:         {}", created.api_key)?;
    writeln!(out, "Store the API key now: it is shown only once.")?;
    Ok(())
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}
