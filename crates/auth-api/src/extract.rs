//! Request extractors that answer bad input with the contract's problem
//! documents instead of actix's text/plain defaults.

use crate::config::Registration;
use crate::error::ApiError;
use crate::fields::{self, FromJson, Nesting, Read};
use crate::routes::Access;
use crate::state::AppState;
use actix_web::HttpMessage as _;
use actix_web::body::BoxBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpRequest, web};
use auth_core::auth::Principal;
use auth_core::caller::Caller;
use auth_core::domain::Right;
use futures_util::StreamExt as _;
use std::future::Future;
use std::pin::Pin;

/// A body's first read happens once this much of it arrived (its first
/// chunk, as a rule); each later one at twice the size of the last, and at
/// its end. An unknown member near the start (a body padded with one) is
/// refused after one small read; a body read whole costs at most three
/// times one read.
const FIRST_READ: usize = 1024;

/// A JSON body read and checked in the contract's order: content type (415),
/// size (413), syntax and depth (400), shape and values (422); an unknown
/// member is refused (422) as soon as it is read, before the rest arrives.
pub struct JsonBody<T: FromJson>(pub T::Checked);

impl<T: FromJson + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let json_type = is_json_content_type(req);
        let declared_len = declared_length(req);
        let payload = payload.take();
        Box::pin(async move {
            if !json_type {
                return Err(ApiError::UnsupportedMediaType);
            }
            let limit = T::MAX_BODY;
            if declared_len.is_some_and(|len| len > limit) {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            read_checked::<T>(payload, limit).await.map(JsonBody)
        })
    }
}

/// Reads a body of at most `limit` bytes, judging what has arrived at
/// [`FIRST_READ`] and then at each doubling: an unknown member is refused
/// as soon as it is read, before the rest arrives.
async fn read_checked<T: FromJson>(
    mut payload: Payload,
    limit: usize,
) -> Result<T::Checked, ApiError> {
    auth_core::or_fault!(BodyReadWhole => crate::faults::read_whole::<T>(payload, limit).await);
    let mut body = web::BytesMut::new();
    let mut nesting = Nesting::default();
    let mut next_read = FIRST_READ;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| ApiError::MalformedRequest("the body could not be read"))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        nesting.feed(&chunk)?;
        body.extend_from_slice(&chunk);
        if body.len() >= next_read {
            fields::read::<T>(&body, false)?;
            next_read = body.len() * 2;
        }
    }
    match fields::read::<T>(&body, true)? {
        Read::Done(checked) => Ok(checked),
        Read::NeedMore => Err(ApiError::MalformedRequest("the body is not valid JSON")),
    }
}

/// A JSON body that may be left out: a request with neither a body nor a
/// `Content-Type` reads as `{}` (every member at its default); anything else
/// is read as [`JsonBody`] reads it.
pub struct OptionalJsonBody<T: FromJson>(pub T::Checked);

impl<T: FromJson + 'static> FromRequest for OptionalJsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let headers = req.headers();
        let bodyless = !headers.contains_key(header::CONTENT_TYPE)
            && !headers.contains_key(header::TRANSFER_ENCODING)
            && matches!(declared_length(req), None | Some(0));
        if bodyless {
            let read = match fields::read::<T>(b"{}", true) {
                Ok(Read::Done(checked)) => Ok(OptionalJsonBody(checked)),
                Ok(Read::NeedMore) => Err(ApiError::Internal("`{}` read as incomplete".into())),
                Err(e) => Err(e),
            };
            return Box::pin(std::future::ready(read));
        }
        let body = JsonBody::<T>::from_request(req, payload);
        Box::pin(async move { body.await.map(|JsonBody(t)| OptionalJsonBody(t)) })
    }
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

fn is_json_content_type(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The raw bearer token of a request; missing or malformed is `invalid_token`.
pub struct BearerToken(pub String);

impl BearerToken {
    fn read(req: &HttpRequest) -> Result<BearerToken, ApiError> {
        let value = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::InvalidToken)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(ApiError::InvalidToken)?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::InvalidToken);
        }
        Ok(BearerToken(token.trim().to_string()))
    }
}

impl FromRequest for BearerToken {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(BearerToken::read(req))
    }
}

/// The credential check in front of every route but the public ones:
/// validates the bearer token (a session's or an API key's) before any
/// extractor runs, so a caller without a valid credential gets
/// `401 invalid_token` and its body is never read (the contract's
/// "authentication before bodies"); then checks that the caller may call a
/// route of this `access` (`403 forbidden`, the body still unread).
pub async fn require_credential(
    access: Access,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let checked = authenticate(req.request())
        .await
        .and_then(|caller| admit(access, caller));
    match checked {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.call(req).await
        }
        Err(e) => Ok(req.error_response(e)),
    }
}

/// Whether `caller` may call a route of `access`: a key has no session
/// (`401` on the routes of the session itself) and does not act as a
/// person (`403` where only a person may); then the right the route needs.
fn admit(access: Access, caller: Caller) -> Result<Caller, ApiError> {
    match (&caller, access) {
        (Caller::Key(_), Access::Session) => Err(ApiError::InvalidToken),
        (Caller::Key(_), Access::Personal) => Err(ApiError::Refused(
            "this needs a session: an API key may not do it",
        )),
        _ => access
            .right()
            .map_or(Ok(()), |right| allow(&caller, right))
            .map(|()| caller),
    }
}

/// The check in front of registration: a token, when sent, must be valid
/// (its caller is kept for the handler: an admin may give roles); while
/// registration is closed, anyone but an admin is `403 forbidden`. Both
/// before the body is read.
pub async fn require_registrar(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let closed = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| state.registration == Registration::Closed);
    let caller = match req.headers().contains_key(header::AUTHORIZATION) {
        true => authenticate(req.request()).await.map(Some),
        false => Ok(None),
    };
    let checked = caller.and_then(|caller| {
        let admin = caller
            .as_ref()
            .is_some_and(|c| c.roles().grant(Right::Administer));
        match closed && !admin {
            true => Err(ApiError::Forbidden(Right::Administer)),
            false => Ok(caller),
        }
    });
    match checked {
        Ok(caller) => {
            if let Some(caller) = caller {
                req.extensions_mut().insert(caller);
            }
            next.call(req).await
        }
        Err(e) => Ok(req.error_response(e)),
    }
}

/// `Ok` when the caller's roles grant `right`; `403 forbidden` otherwise.
pub fn allow(caller: &Caller, right: Right) -> Result<(), ApiError> {
    if caller.roles().grant(right) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(right))
    }
}

async fn authenticate(req: &HttpRequest) -> Result<Caller, ApiError> {
    let BearerToken(token) = BearerToken::read(req)?;
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(|| ApiError::Internal("no app state".into()))?;
    Ok(state.sessions.authenticate(&token).await?)
}

/// The caller, as [`require_credential`] authenticated it. On a route
/// without that check there is no caller: `401`, never an unchecked pass.
/// As an `Option`, the caller [`require_registrar`] authenticated, if a
/// token was sent.
pub struct Authenticated(pub Caller);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .map(Authenticated)
                .ok_or(ApiError::InvalidToken),
        )
    }
}

/// The caller's session, on the routes only a session may call
/// ([`Access::Session`], [`Access::Personal`]).
pub struct InSession(pub Principal);

impl FromRequest for InSession {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = match req.extensions().get::<Caller>() {
            Some(Caller::Session(p)) => Ok(InSession(p.clone())),
            _ => Err(ApiError::InvalidToken),
        };
        std::future::ready(session)
    }
}

/// A path id; anything that is not a UUID is simply not found.
pub fn path_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::NotFound)
}

/// Until the schema is migrated, the contract's routes answer `503` with
/// `Retry-After` (the operations routes answer as usual: `/readyz` says why).
pub async fn until_migrated(
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let migrated = req
        .app_data::<web::Data<AppState>>()
        .is_some_and(|state| *state.migrated.borrow());
    if migrated || !req.path().starts_with("/v1/") {
        return next.call(req).await;
    }
    let not_yet = ApiError::Unavailable(auth_core::StoreError::Unavailable(
        auth_core::Unavailable::ServerNotReady,
        "the schema is not migrated yet".into(),
    ));
    Ok(req.error_response(not_yet))
}
