//! The pure domain of cardvault: values and rules with no I/O.
//!
//! Everything here is deterministic and testable without a network, a database or a clock
//! (callers pass "today" in). The server crate wires these pieces to the outside world.
#![forbid(unsafe_code)]
// On top of the workspace lints: an out-of-range index or a lossy `as` cast in the domain would
// be a panic or a silent truncation on the request path.
#![warn(clippy::indexing_slicing, clippy::as_conversions)]

pub mod bank;
pub mod card;
pub mod date;
pub mod destination;
pub mod json_keys;
pub mod mask;
pub mod origin;
pub mod scrub;
pub mod secret;
pub mod template;
pub mod validation;
pub mod xml;

pub use validation::ValidationError;
