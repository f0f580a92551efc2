//! The statuses a task shows. Stored rows hold the same words, in the
//! database's own type `task_status` (migration 9: a word that is not a
//! status fails where a statement names it), read and written through this
//! type; a lapsed lease is stored as `assigned` and shown as `unassigned`,
//! or `failed` on the last allowed attempt (`task_view`).

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};
use std::io::Write as _;

/// The database's `task_status` type.
#[derive(Debug, Clone, Copy, diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
#[diesel(postgres_type(name = "task_status"))]
pub struct SqlTaskStatus;

/// A task's status as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromSqlRow, AsExpression)]
#[diesel(sql_type = SqlTaskStatus)]
pub enum TaskStatus {
    Unassigned,
    Assigned,
    Completed,
    /// Failed for good: by its worker without a retry, on its last attempt,
    /// or by a lease that lapsed on its last attempt.
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 5] = [
        TaskStatus::Unassigned,
        TaskStatus::Assigned,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Unassigned => "unassigned",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// An enum's value travels as its label, in text and binary alike.
impl FromSql<SqlTaskStatus, Pg> for TaskStatus {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let text = std::str::from_utf8(value.as_bytes())?;
        TaskStatus::parse(text).ok_or_else(|| format!("unknown task status {text:?}").into())
    }
}

impl ToSql<SqlTaskStatus, Pg> for TaskStatus {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(self.as_str().as_bytes())?;
        Ok(IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::TaskStatus;

    #[test]
    fn every_status_reads_back_from_its_word() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(TaskStatus::parse("Assigned"), None);
        assert_eq!(TaskStatus::parse(""), None);
    }
}
