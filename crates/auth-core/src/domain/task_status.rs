//! The statuses a task shows. Stored rows hold the same words; a lapsed
//! lease is stored as `assigned` and shown as `unassigned` (`task_view`).

/// A task's status as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskStatus {
    Unassigned,
    Assigned,
    Completed,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 3] = [
        TaskStatus::Unassigned,
        TaskStatus::Assigned,
        TaskStatus::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Unassigned => "unassigned",
            TaskStatus::Assigned => "assigned",
            TaskStatus::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == text)
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
