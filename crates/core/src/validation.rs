//! The one error type of input validation, shaped after API.md's 400 rows.

/// Why an input value was refused. Field names are the API's own (`cardNumber`, `cvv`, …), never
/// the value, so an error can be logged or returned without leaking data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("Missing required field: {0}")]
    MissingField(&'static str),
    #[error("Invalid value for {0}")]
    InvalidField(&'static str),
    #[error("Invalid card number")]
    InvalidCardNumber,
    #[error("Card has expired")]
    CardExpired,
}
