//! Deliberately broken variants of auth-api's own rules, compiled only with
//! the test-only `faults` feature (auth-core's `faults` chooses them by
//! `TESSERA_FAULT`); each replaces a whole function through one
//! `or_fault!` line at its top. See auth-core's `faults` module.

use crate::error::ApiError;
use crate::fields::{self, FromJson, Nesting, Read};
use actix_web::dev::Payload;
use futures_util::StreamExt as _;

/// `body_read_whole`: the body is read to its end (its size and nesting
/// still checked as it arrives) and materialised before its members are
/// judged, so a padded body costs its whole size.
pub async fn read_whole<T: FromJson>(
    mut payload: Payload,
    limit: usize,
) -> Result<T::Checked, ApiError> {
    let mut body = Vec::new();
    let mut nesting = Nesting::default();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::MalformedRequest("the body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        nesting.feed(&chunk)?;
        body.extend_from_slice(&chunk);
    }
    let whole: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    std::hint::black_box(&whole);
    match fields::read::<T>(&body, true)? {
        Read::Done(checked) => Ok(checked),
        Read::NeedMore => Err(ApiError::MalformedRequest("the body is not valid JSON")),
    }
}
