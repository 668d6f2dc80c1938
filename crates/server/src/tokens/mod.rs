//! Tokens: what a token holds once opened, how it is sealed for the database, and its
//! lifecycle (expiry, and the sweeper that erases expired tokens).

mod data;
pub mod expiry;
pub mod sweeper;

pub use data::{Holder, TokenData};
