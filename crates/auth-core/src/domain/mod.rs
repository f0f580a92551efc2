//! Types that can only hold valid values ("parse, don't validate").

mod client;
mod email;
mod password;
mod role;
mod task_status;
mod token;

pub use client::{ClientInfo, MAX_USER_AGENT_CHARS};
pub use email::Email;
pub use password::Password;
pub use role::{Right, Role, Roles};
pub use task_status::{SqlTaskStatus, TaskStatus};
pub use token::{API_KEY_PREFIX, ApiKeyToken, SessionToken, TokenHash};

use serde::Serialize;

/// Most field errors a `422` lists; past it the answer says `truncated`.
/// Readers stop collecting at one more, so a hostile body costs at most
/// this many errors, not one per item.
pub const MAX_FIELD_ERRORS: usize = 50;

/// One offending input field, as the API's `422 validation_failed` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            detail: detail.into(),
        }
    }
}
