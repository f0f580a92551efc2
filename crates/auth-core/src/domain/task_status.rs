//! The statuses a task shows. Stored rows hold the same words (the column is
//! `text` with a CHECK), read and written through this type; a lapsed lease
//! is stored as `assigned` and shown as `unassigned`, or `failed` on the last
//! allowed attempt (`task_view`).

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

/// A task's status as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, FromSqlRow, AsExpression)]
#[diesel(sql_type = Text)]
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

impl FromSql<Text, Pg> for TaskStatus {
    fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
        let text = <String as FromSql<Text, Pg>>::from_sql(value)?;
        TaskStatus::parse(&text).ok_or_else(|| format!("unknown task status {text:?}").into())
    }
}

impl ToSql<Text, Pg> for TaskStatus {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        <str as ToSql<Text, Pg>>::to_sql(self.as_str(), out)
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
