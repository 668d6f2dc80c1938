//! Black-box tests: the real binary on 127.0.0.1:0, a local HTTPS processor stub, real SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod exposition;
mod harness;
mod softhsm;

mod ambiguous_input;
mod audit;
mod auth;
mod bounded_growth;
mod browser;
mod collect;
mod connections;
mod control;
mod cvc_sessions;
mod destinations;
mod detokenize;
mod echo_carriers;
mod idempotency;
mod key_providers;
mod keys_rotation;
mod limits;
mod metrics;
mod openapi;
mod portability;
mod processor_protocols;
mod provisioning;
mod proxy;
mod proxy_errors;
mod proxy_formats;
mod rate_limits;
mod scale_out;
mod ssrf;
mod startup;
mod storage;
mod storage_faults;
mod tls;
mod tokenize;
mod tokens_lifecycle;
