//! Tokens: what a token holds once opened, and how it is sealed for the database. (Token
//! lifecycle, expiry and reveal will live here too.)

mod data;

pub use data::{Holder, TokenData};
