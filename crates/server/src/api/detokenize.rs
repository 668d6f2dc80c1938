//! `POST /detokenize`: the card or bank data of a token, in the clear, to an application with
//! the `reveal` permission.
//!
//! Ozura answers this under the `tokenization` permission; cardvault is stricter: `reveal` is
//! its own permission, never implied by another and never granted by default, so the keys
//! that tokenize and charge (the many) cannot read cards back (the few that must). Never a CVC:
//! none is stored.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use zeroize::Zeroizing;

use super::auth::Caller;
use super::body::{RawBody, json_object, required_text};
use super::openapi as doc;
use super::tokens::live_token;
use super::{ApiError, AppState};
use crate::tokens::TokenData;

/// Room for any answer, so the buffer holding the card number is never reallocated (which
/// would leave an unwiped copy behind).
const ANSWER_CAPACITY: usize = 1024;

#[utoipa::path(
    post,
    path = "/detokenize",
    tag = "tokens",
    summary = "Reveal a token's data",
    operation_id = "detokenize",
    description = "The token's data in the clear (extension; `reveal` permission, never granted \
        by default). Never a CVC: none is stored. Every attempt is audited.",
    security(("api_key" = [])),
    request_body = doc::DetokenizeRequest,
    responses(
        (status = 200, description = "The data", body = Answer<'static>),
        (status = 400, description = "`invalid_body`, `missing_field` (`token`), `invalid_field`", body = doc::ErrorBody),
        (status = 401, description = "`invalid_api_key`", body = doc::ErrorBody),
        (status = 403, description = "`permission_denied`: the key lacks `reveal`", body = doc::ErrorBody),
        (status = 404, description = "`token_not_found`", body = doc::ErrorBody),
        doc::BodyLimits,
        doc::RateLimited,
        doc::Common,
    )
)]
pub async fn detokenize(
    State(state): State<AppState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let mut entry = caller.audit("detokenize");
    let result = async {
        caller.require_reveal()?;
        let body = json_object(&body)?;
        let token = required_text(&body, "token")?;
        entry.token.clone_from(&token);
        let record = live_token(&state, &caller.project.id, &token).await?;
        let data = TokenData::open(
            &state.keyring,
            &record.sealed,
            &record.project_id,
            &record.id,
        )?;
        reveal(&data)
    }
    .await;
    // Every attempt is recorded, refusals included; committed before anything is revealed (if
    // it cannot be written, the answer is 503 and reveals nothing).
    entry.outcome = match &result {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code().to_owned(),
    };
    state.audit(entry).await?;
    result
}

/// The answer, serialized straight from the opened token into a buffer that is wiped when the
/// response body is dropped (no intermediate `Value`, whose strings would not be).
fn reveal(data: &TokenData) -> Result<Response, ApiError> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(ANSWER_CAPACITY));
    serde_json::to_writer(
        &mut *buffer,
        &Answer {
            success: true,
            data: Revealed::from(data),
        },
    )
    .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let mut response = Bytes::from_owner(buffer).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `200` of `POST /detokenize`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Detokenized)]
pub struct Answer<'a> {
    success: bool,
    data: Revealed<'a>,
}

/// The wire shape, borrowing from the opened token. Field names are Ozura's.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Revealed<'a> {
    #[serde(rename_all = "camelCase")]
    Card {
        card_number: &'a str,
        expiration_month: &'a str,
        expiration_year: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        first_name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        last_name: Option<&'a str>,
    },
    #[serde(rename_all = "camelCase")]
    Bank {
        account_number: &'a str,
        routing_number: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        first_name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(nullable = false)]
        last_name: Option<&'a str>,
    },
}

impl<'a> From<&'a TokenData> for Revealed<'a> {
    fn from(data: &'a TokenData) -> Self {
        match data {
            TokenData::Card {
                pan,
                expiry,
                holder,
            } => Self::Card {
                card_number: pan.expose_secret(),
                expiration_month: expiry.month(),
                expiration_year: expiry.year(),
                first_name: holder.first_name.as_deref(),
                last_name: holder.last_name.as_deref(),
            },
            TokenData::Bank {
                account,
                routing,
                holder,
            } => Self::Bank {
                account_number: account.expose_secret(),
                routing_number: routing.as_str(),
                first_name: holder.first_name.as_deref(),
                last_name: holder.last_name.as_deref(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use cardvault_core::bank::{AccountNumber, RoutingNumber};
    use cardvault_core::card::{Expiry, Pan};
    use serde_json::{Value, json};

    use super::*;
    use crate::tokens::Holder;

    fn wire(data: &TokenData) -> Value {
        serde_json::to_value(Revealed::from(data)).unwrap()
    }

    #[test]
    fn the_answer_has_ozura_field_names_and_no_cvc() {
        let card = TokenData::Card {
            pan: Pan::parse("4242 4242 4242 4242").unwrap(),
            expiry: Expiry::from_stored("07".into(), "2031".into()),
            holder: Holder {
                first_name: Some("Jane".into()),
                last_name: None,
            },
        };
        assert_eq!(
            wire(&card),
            json!({"type": "card", "cardNumber": "4242424242424242", "expirationMonth": "07",
                   "expirationYear": "2031", "firstName": "Jane"})
        );
        let bank = TokenData::Bank {
            account: AccountNumber::parse("000123456789").unwrap(),
            routing: RoutingNumber::parse("110000000").unwrap(),
            holder: Holder::default(),
        };
        assert_eq!(
            wire(&bank),
            json!({"type": "bank", "accountNumber": "000123456789", "routingNumber": "110000000"})
        );
    }
}
