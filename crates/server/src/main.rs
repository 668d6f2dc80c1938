use std::process::ExitCode;

// Many small, short-lived allocations per request (JSON values, headers, buffers): mimalloc's
// thread-local free lists serve them with less contention than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    cardvault_server::cli::run().await
}
