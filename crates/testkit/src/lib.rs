//! Test support for cardvault, in one place so the black-box tests (`crates/server/tests/e2e`),
//! the load benchmark (`crates/bench`) and the `processor-stub` example run the same stub, the
//! same certificates and the same process handling.
//!
//! Dev-only: the server's tests and examples take it as a dev-dependency, the benchmark binary as
//! a dependency; the server's library and binary never link it.
//!
//! - [`certs`]: a certificate authority per run, the stub's server certificate, client identities.
//! - [`stub`]: the HTTPS payment-processor stub (recording, or lean for load).
//! - [`process`]: a child process that is killed on drop; waiting for a port.
//! - [`cardvault`]: the `cardvault` binary: where it is, its CLI's JSON, `serve` on port 0.
//! - [`checkout`]: an example merchant site on the vault's card element (browser tests, the
//!   `checkout` binary).
//! - [`ssrf_corpus`]: the shared SSRF corpus, read by the core's rule test and the server's
//!   end-to-end test.
#![forbid(unsafe_code)]
// Test support: a failed setup step should stop the test or the benchmark loudly, right there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cardvault;
pub mod certs;
pub mod checkout;
pub mod process;
pub mod ssrf_corpus;
pub mod stub;

pub use stub::{Recorded, Stub};
