use std::process::ExitCode;

// Many small, short-lived allocations per request (JSON values, headers, buffers): mimalloc's
// thread-local free lists serve them with less contention than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match cardvault_server::runtime::build() {
        Ok(runtime) => runtime.block_on(cardvault_server::cli::run()),
        Err(refused) => {
            eprintln!("cardvault: {refused}");
            ExitCode::FAILURE
        }
    }
}
