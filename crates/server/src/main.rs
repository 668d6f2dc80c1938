use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    cardvault_server::cli::run().await
}
