//! Tokens: what a token holds once opened, how it is sealed for the database (with its own rule
//! on where it may be sent), and its lifecycle (expiry, and the sweeper that erases expired
//! tokens).

mod allowed;
mod data;
pub mod expiry;
mod refresh;
pub mod sweeper;

pub use allowed::{AllowedDestinations, InvalidAllowedDestinations};
pub use data::{Holder, TokenData};
pub use refresh::{Refreshed, refresh_held_token};
