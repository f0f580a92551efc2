//! A history: rounds of steps, each step an operation of the interface sent
//! to one of two instances, with what it answered and when.
//!
//! Steps name what earlier steps produced (a token, a session, a task) by
//! the step that produced it, so a history replays as written and still
//! means something once the shrinker has taken steps out: a name whose
//! producer is gone becomes a token or id nobody holds.

use crate::rules::Ms;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use uuid::Uuid;

/// A step's number, unique in its history.
pub type StepId = u32;

/// A task as an earlier `Create` step answered it: its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskRef {
    pub create: StepId,
    pub item: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Item {
    pub priority: i32,
    pub max_attempts: i32,
    pub key: Option<String>,
}

impl Item {
    /// An item under `key`, with the one content every item of that key
    /// is sent with (a key repeated with other content is a conflict).
    pub fn keyed(key: String) -> Item {
        Item {
            priority: 0,
            max_attempts: 2,
            key: Some(key),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Act {
    Heartbeat { lease_secs: Option<u32> },
    Complete,
    Release,
    Fail { retry: bool, error: String },
    Cancel,
}

/// An operation of the interface, tokens named by the step that received
/// them. `S` names a session and `T` a task: as generated, by the step that
/// produced them ([`Op`]); as the model applies it, by their ids ([`Call`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Request<S, T> {
    /// `email` indexes the run's users; one past them is an unknown email.
    Login {
        email: usize,
        right: bool,
    },
    Validate {
        token: StepId,
    },
    Refresh {
        token: StepId,
    },
    Logout {
        token: StepId,
    },
    RevokeOne {
        token: StepId,
        session: S,
    },
    RevokeAll {
        token: StepId,
    },
    ListSessions {
        token: StepId,
    },
    Create {
        token: StepId,
        items: Vec<Item>,
    },
    Claim {
        token: StepId,
        count: u8,
        wait_ms: u16,
    },
    Act {
        token: StepId,
        task: T,
        act: Act,
    },
    Stats {
        token: StepId,
    },
}

/// As generated: a session by the login step that opened it, a task by the
/// create step and item that made it.
pub type Op = Request<StepId, TaskRef>;

/// As applied: sessions and tasks by their ids (a name whose producer is
/// gone: an id nobody has).
pub type Call = Request<Uuid, Uuid>;

impl<S, T: Copy> Request<S, T> {
    /// The token it presents, if any.
    pub fn token(&self) -> Option<StepId> {
        match self {
            Request::Login { .. } => None,
            Request::Validate { token }
            | Request::Refresh { token }
            | Request::Logout { token }
            | Request::RevokeOne { token, .. }
            | Request::RevokeAll { token }
            | Request::ListSessions { token }
            | Request::Create { token, .. }
            | Request::Claim { token, .. }
            | Request::Act { token, .. }
            | Request::Stats { token } => Some(*token),
        }
    }

    /// The task it acts on, if one.
    pub fn task(&self) -> Option<T> {
        match self {
            Request::Act { task, .. } => Some(*task),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: StepId,
    /// Which of the two instances it is sent to.
    pub instance: u8,
    pub op: Op,
    /// Sent once this step of its round has answered, not at the barrier:
    /// a call that comes right after another (a validation the moment a
    /// log out returned). A step no longer in the round is not waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<StepId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    /// The service's clock moves this far forward before the round.
    pub advance_ms: Ms,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub rounds: Vec<Round>,
}

impl History {
    pub fn steps(&self) -> usize {
        self.rounds.iter().map(|r| r.steps.len()).sum()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Unassigned,
    Assigned,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "unassigned" => Status::Unassigned,
            "assigned" => Status::Assigned,
            "completed" => Status::Completed,
            "failed" => Status::Failed,
            "cancelled" => Status::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Counts {
    pub unassigned: i64,
    pub assigned: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub delayed: i64,
}

/// An answer, reduced to what the rules speak of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `201` from a login or a refresh.
    Session {
        session: Uuid,
        user: Uuid,
    },
    /// `200` from validate.
    Valid {
        session: Uuid,
    },
    /// `204`.
    Done,
    /// `200` from log out everywhere.
    Revoked(u32),
    Sessions(BTreeSet<Uuid>),
    Created {
        ids: Vec<Uuid>,
        created: u32,
    },
    Claimed(Vec<Uuid>),
    /// `200` with the task acted on.
    Task {
        status: Status,
    },
    Counts(Counts),
    Problem {
        status: u16,
        code: String,
    },
    /// Anything else (a status or a body the interface does not have).
    Unexpected(String),
}

impl Answer {
    pub fn problem(status: u16, code: &str) -> Answer {
        Answer::Problem {
            status,
            code: code.to_owned(),
        }
    }

    pub fn invalid_token() -> Answer {
        Answer::problem(401, "invalid_token")
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Session { session, .. } => write!(f, "201 session {session}"),
            Answer::Valid { session } => write!(f, "200 session {session}"),
            Answer::Done => write!(f, "204"),
            Answer::Revoked(n) => write!(f, "200 revoked {n}"),
            Answer::Sessions(ids) => write!(f, "200 sessions {ids:?}"),
            Answer::Created { ids, created } => write!(f, "201 created {created} of {ids:?}"),
            Answer::Claimed(ids) => write!(f, "200 claimed {ids:?}"),
            Answer::Task { status } => write!(f, "200 task {status:?}"),
            Answer::Counts(c) => write!(f, "200 {c:?}"),
            Answer::Problem { status, code } => write!(f, "{status} {code}"),
            Answer::Unexpected(what) => write!(f, "unexpected: {what}"),
        }
    }
}

/// One step as it ran: the call as resolved, its answer, and when it was
/// sent and answered (microseconds since the run began, real time).
#[derive(Debug, Clone)]
pub struct Event {
    pub step: StepId,
    pub call: Call,
    pub answer: Answer,
    pub sent: i64,
    pub answered: i64,
}
