//! The `cardvault` command line: run the server, and administer a vault.
#![allow(
    clippy::print_stdout,
    reason = "the CLI's results (created keys, allowlists, the listening address) are its stdout"
)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::admin::{self, NewProject};

use crate::store::Database;
use crate::store::{Mode, Permissions};
use crate::{StartError, open_store};

mod audit;
mod destinations;
mod init;
mod keys;
mod port;
mod progress;
mod project;
mod serve;

use self::destinations::{TlsFiles, change_allowlist, find_project, set_destination_tls};
use self::init::{init, open_vault, print_keys};
use self::serve::serve;

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
        /// The vault's data directory (master key file; the SQLite database unless
        /// CARDVAULT_DATABASE_URL is set) [default: ./cardvault-data].
        #[arg(long, env = "CARDVAULT_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "CARDVAULT_LISTEN")]
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
    /// Check and export the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Rotate, inspect and retire the data keys that seal stored card data.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the HTTP API's OpenAPI 3.1 document (what `GET /openapi.json` serves).
    Openapi,
    /// Import cards and bank accounts from another vault's export (CSV or JSON lines, plain or
    /// OpenPGP-encrypted) into a project, while the vault serves. Re-run (or resumed after a
    /// kill), it imports no record twice.
    Import(port::ImportArgs),
    /// Export a project's live tokens with their card or bank data, encrypted to an OpenPGP
    /// key, as JSON lines that `cardvault import --format jsonl` reads back.
    Export(port::ExportArgs),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Add a data key version, make it seal new records on every instance, and reseal every
    /// record from older versions with it, in batches, while the vault serves. Stopped (Ctrl-C,
    /// kill), it resumes where it was when run again; one runs at a time.
    Rotate {
        #[command(flatten)]
        vault: VaultDir,
        /// How long running instances take to see changed keys: their CARDVAULT_CACHE_TTL_MS
        /// (the rotation waits that long, plus a second, before each switch).
        #[arg(long, env = "CARDVAULT_CACHE_TTL_MS", default_value_t = crate::config::DEFAULT_CACHE_TTL_MS)]
        cache_ttl_ms: u64,
        /// Records resealed per transaction (after each, the rotation pauses as long as the
        /// transaction took, so calls being served get the database in between).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch_size: u32,
        /// Progress as JSON lines on stdout (events: added, resuming, waiting, activated,
        /// progress, done) instead of a progress bar.
        #[arg(long)]
        json: bool,
    },
    /// Show the data key versions, how many records each seals, and any rotation in progress.
    Status {
        #[command(flatten)]
        vault: VaultDir,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete a data key version no record uses any more (refused while one does).
    Retire {
        #[command(flatten)]
        vault: VaultDir,
        /// The version to retire.
        version: u32,
    },
    /// Wrap every data key and the root secret by a new master key (the current one is the one
    /// CARDVAULT_KEY_PROVIDER and its settings name). Records are not touched. Afterwards start
    /// every instance with the new key's settings; running ones keep working until restarted.
    Rewrap {
        #[command(flatten)]
        vault: VaultDir,
        #[command(flatten)]
        to: keys::NewMasterKey,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every chain of the audit log: an edited, deleted, inserted or reordered record is
    /// named; prints each chain's head. Keep the heads elsewhere (--write-heads) and pass them
    /// back later (--heads) to catch a log cut after them.
    Verify {
        #[command(flatten)]
        vault: VaultDir,
        /// Heads kept from an earlier run, one `chain:seq:hash` per line: each must still be there.
        #[arg(long)]
        heads: Option<PathBuf>,
        /// Write the heads found to this file.
        #[arg(long)]
        write_heads: Option<PathBuf>,
    },
    /// Write the audit log as JSON lines (one record each, hashes included) to stdout.
    Export {
        #[command(flatten)]
        vault: VaultDir,
        /// Only this project's records.
        #[arg(long)]
        project: Option<String>,
    },
}

#[derive(Args)]
struct VaultDir {
    /// The vault's data directory (master key file; the SQLite database unless --database-url).
    #[arg(long, env = "CARDVAULT_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// PostgreSQL URL (`postgres://…`) shared by several instances.
    #[arg(long, env = "CARDVAULT_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl VaultDir {
    fn database(&self) -> Database {
        crate::database(&self.data_dir, self.database_url.as_deref(), 4)
    }

    /// The master key the settings name (`CARDVAULT_KEY_PROVIDER` and its settings).
    fn master_key(
        &self,
        create: bool,
    ) -> Result<std::sync::Arc<dyn crate::crypto::MasterKeyProvider>, StartError> {
        let settings = crate::keys::master::ProviderSettings::from_env(&self.data_dir)?;
        Ok(settings.open(create)?)
    }
}

#[derive(Subcommand)]
enum ProjectCommand {
    /// Create a project with its publishable key and a first application.
    Create {
        #[command(flatten)]
        vault: VaultDir,
        /// A name for people (shown in listings; need not be unique).
        #[arg(long)]
        name: String,
        /// `test` projects take test cards and `/test-tokens`; `live` ones real cards.
        #[arg(long, value_enum, default_value = "test")]
        mode: ModeArg,
        /// Return the existing token when the same card is tokenized again.
        #[arg(long)]
        deduplicate: bool,
        /// Print exactly one JSON object with the ids and keys.
        #[arg(long)]
        json: bool,
    },
    /// Add destinations to the project's allowlist; once it has one, the proxy may call only
    /// destinations it permits.
    Allow(ProjectRules),
    /// Remove destinations from the project's allowlist.
    Disallow(ProjectRules),
    /// Set the web origins whose pages may embed the project's card fields (the list is
    /// replaced; none given: show it).
    Origins {
        #[command(flatten)]
        vault: VaultDir,
        /// The project's id (`proj_…`).
        #[arg(long)]
        project: String,
        /// Remove every origin: no page may embed the fields.
        #[arg(long, conflicts_with = "origins")]
        clear: bool,
        /// Origins: `https://shop.example`, `https://shop.example:8443`, `https://*.example.com`
        /// (subdomains); `http://` only for localhost, 127.0.0.1 and [::1].
        origins: Vec<String>,
    },
    /// Show a project's settings: mode, allowed origins, destination allowlist, TLS hosts.
    Show {
        #[command(flatten)]
        vault: VaultDir,
        /// The project's id (`proj_…`).
        #[arg(long)]
        project: String,
        /// Print exactly one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set the TLS settings the proxy uses for one processor host: extra trusted roots and a
    /// client certificate for processors that require mutual TLS.
    Tls {
        #[command(flatten)]
        vault: VaultDir,
        /// The project's id (`proj_…`).
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
    /// The project's id (`proj_…`).
    #[arg(long)]
    project: String,
    /// Host patterns: `api.stripe.com`, `*.adyen.com`, optionally with a path prefix
    /// (`api.stripe.com/v1`).
    #[arg(required = true)]
    rules: Vec<String>,
}

#[derive(Subcommand)]
enum AppCommand {
    /// List the project's applications (never their keys).
    List {
        #[command(flatten)]
        vault: VaultDir,
        /// The project's id (`proj_…`).
        #[arg(long)]
        project: String,
        /// Print exactly one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an application: every key of it stops working (on other instances within
    /// CARDVAULT_CACHE_TTL_MS).
    Revoke {
        #[command(flatten)]
        vault: VaultDir,
        /// The project's id (`proj_…`).
        #[arg(long)]
        project: String,
        /// The application's id (`app_…`).
        #[arg(long)]
        app: String,
    },
    /// Give an application a new API key (shown once); the old one keeps working for
    /// --expire-old-in-seconds, then stops.
    RollKey {
        #[command(flatten)]
        vault: VaultDir,
        /// The project's id (`proj_…`).
        #[arg(long)]
        project: String,
        /// The application's id (`app_…`).
        #[arg(long)]
        app: String,
        /// How long the old key keeps working (0: it stops now; at most 604800, a week).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=604_800))]
        expire_old_in_seconds: u64,
        /// Print exactly one JSON object with the new key.
        #[arg(long)]
        json: bool,
    },
    /// Create an application and its secret API key.
    Create {
        #[command(flatten)]
        vault: VaultDir,
        /// The project's id (`proj_…`).
        #[arg(long)]
        project: String,
        /// The application's name; it also appears in its key (`key_<name>_test_pvt_…`).
        #[arg(long)]
        name: String,
        /// Comma list of tokenization, provisioning, reveal, audit.
        #[arg(long, default_value = "tokenization")]
        permissions: String,
        /// Print exactly one JSON object with the ids and keys.
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
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("cannot listen on {0}")]
    Listen(std::net::SocketAddr, #[source] std::io::Error),
    #[error("{}", .0.display())]
    Path(PathBuf, #[source] std::io::Error),
    #[error("the OpenAPI document")]
    Openapi(#[source] serde_json::Error),
}

pub async fn run() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cardvault: {}", crate::error_chain::chain(&e));
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
                first_permissions: crate::store::Permissions {
                    tokenization: true,
                    ..Default::default()
                },
            };
            let created = admin::create_project(store.as_ref(), &keyring, new).await?;
            audit::record(
                &store,
                &keyring,
                "project.create",
                &created.project_id,
                serde_json::json!({}),
            )
            .await?;
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
                ProjectCommand::Origins {
                    vault,
                    project,
                    clear,
                    origins,
                },
        } => project::set_origins(&vault, &project, clear, &origins).await,
        Command::Project {
            command:
                ProjectCommand::Show {
                    vault,
                    project,
                    json,
                },
        } => project::show(&vault, &project, json).await,
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
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    vault,
                    cache_ttl_ms,
                    batch_size,
                    json,
                },
        } => {
            let cache_ttl = std::time::Duration::from_millis(cache_ttl_ms);
            keys::rotate(&vault, cache_ttl, batch_size, json).await
        }
        Command::Keys {
            command: KeysCommand::Status { vault, json },
        } => keys::status(&vault, json).await,
        Command::Keys {
            command: KeysCommand::Retire { vault, version },
        } => keys::retire(&vault, version).await,
        Command::Keys {
            command: KeysCommand::Rewrap { vault, to, json },
        } => keys::rewrap(&vault, &to, json).await,
        Command::Audit {
            command:
                AuditCommand::Verify {
                    vault,
                    heads,
                    write_heads,
                },
        } => audit::verify(&vault, heads.as_deref(), write_heads.as_deref()).await,
        Command::Audit {
            command: AuditCommand::Export { vault, project },
        } => audit::export(&vault, project).await,
        Command::App {
            command:
                AppCommand::List {
                    vault,
                    project,
                    json,
                },
        } => project::list_apps(&vault, &project, json).await,
        Command::App {
            command:
                AppCommand::Revoke {
                    vault,
                    project,
                    app,
                },
        } => project::revoke_app(&vault, &project, &app).await,
        Command::App {
            command:
                AppCommand::RollKey {
                    vault,
                    project,
                    app,
                    expire_old_in_seconds,
                    json,
                },
        } => project::roll_app_key(&vault, &project, &app, expire_old_in_seconds, json).await,
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
                    "permissions are a comma list of tokenization, provisioning, reveal, audit"
                        .into(),
                )
            })?;
            let (store, keyring) = open_vault(&vault).await?;
            let project = find_project(store.as_ref(), &project).await?;
            let created =
                admin::create_application(store.as_ref(), &keyring, &project, &name, permissions)
                    .await?;
            audit::record(
                &store,
                &keyring,
                "application.create",
                &project.id,
                serde_json::json!({"target": created.application_id}),
            )
            .await?;
            print_keys(&created, json, "application created")
        }
        Command::Import(args) => port::import(args).await,
        Command::Export(args) => port::export(args).await,
        Command::Openapi => {
            println!("{}", crate::api::openapi_json().map_err(CliError::Openapi)?);
            Ok(())
        }
    }
}
