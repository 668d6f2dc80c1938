//! The pure domain of cardvault: values and rules with no I/O.
//!
//! Everything here is deterministic and testable without a network, a database or a clock
//! (callers pass "today" in). The server crate wires these pieces to the outside world.
#![forbid(unsafe_code)]

pub mod bank;
pub mod card;
pub mod date;
pub mod destination;
pub mod mask;
pub mod scrub;
pub mod secret;
pub mod template;
pub mod validation;
pub mod xml;

pub use validation::ValidationError;
