//! What the clients were told, kept for the correctness checks that run
//! after the traffic: which registrations, logouts, claims, completions and
//! releases the service acknowledged. Written by the goose clients
//! (`record.json`) and by the chaos tier's traffic; read by the checks.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::path::Path;
use uuid::Uuid;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Users whose registration returned 201.
    pub registered: Vec<Uuid>,
    /// Sessions whose logout returned 204.
    pub logged_out: Vec<Uuid>,
    /// Validations sent with a token after its logout returned; each must be 401.
    pub validations_after_logout: u64,
    /// Of those, how many the service accepted (a violation).
    pub accepted_after_logout: u64,
    /// Claim calls answered 200, and of those how many claimed nothing.
    pub claim_calls: u64,
    pub empty_claims: u64,
    pub requested_total: u64,
    /// The sum of the `claimed` figures the service reported.
    pub claimed_total: u64,
    /// Claim answers whose `claimed` differed from their task list, exceeded
    /// `requested`, or listed a task not assigned to the caller.
    pub dishonest_claims: u64,
    /// Task ids in every claim answer (a task appears once per claim of it).
    pub claimed: Vec<Uuid>,
    /// Tasks whose release returned 200, and whose completion returned 200.
    pub released: Vec<Uuid>,
    pub completed: Vec<Uuid>,
    /// Tasks the producers' batch creates acknowledged as new rows.
    pub tasks_created: u64,
    /// Tasks whose fail returned 200 as `failed`, and as back in the queue
    /// (retried: claimable again after the backoff).
    #[serde(default)]
    pub failed: Vec<Uuid>,
    #[serde(default)]
    pub retried: Vec<Uuid>,
    /// Tasks whose cancel returned 200.
    #[serde(default)]
    pub cancelled: Vec<Uuid>,
    /// Tasks whose worker's write was refused `409 not_assignee` although
    /// the worker held them: legal only if someone cancelled them.
    #[serde(default)]
    pub fenced: Vec<Uuid>,
    /// Every (idempotency key, task id) a create answered with.
    #[serde(default)]
    pub keyed: Vec<(String, Uuid)>,
    /// Requests sent with a credential that lacks the right they need
    /// (each must be 403), and of those how many were served (a violation).
    #[serde(default)]
    pub forbidden_probes: u64,
    #[serde(default)]
    pub forbidden_served: u64,
    /// API keys whose revocation returned 204.
    #[serde(default)]
    pub keys_revoked: Vec<Uuid>,
    /// Uses of a key after its revocation returned (each must be 401), and
    /// of those how many were served (a violation).
    #[serde(default)]
    pub uses_after_revocation: u64,
    #[serde(default)]
    pub served_after_revocation: u64,
}

impl Record {
    /// Adds what another client saw.
    pub fn merge(&mut self, other: Record) {
        self.registered.extend(other.registered);
        self.logged_out.extend(other.logged_out);
        self.validations_after_logout += other.validations_after_logout;
        self.accepted_after_logout += other.accepted_after_logout;
        self.claim_calls += other.claim_calls;
        self.empty_claims += other.empty_claims;
        self.requested_total += other.requested_total;
        self.claimed_total += other.claimed_total;
        self.dishonest_claims += other.dishonest_claims;
        self.claimed.extend(other.claimed);
        self.released.extend(other.released);
        self.completed.extend(other.completed);
        self.tasks_created += other.tasks_created;
        self.failed.extend(other.failed);
        self.retried.extend(other.retried);
        self.cancelled.extend(other.cancelled);
        self.fenced.extend(other.fenced);
        self.keyed.extend(other.keyed);
        self.forbidden_probes += other.forbidden_probes;
        self.forbidden_served += other.forbidden_served;
        self.keys_revoked.extend(other.keys_revoked);
        self.uses_after_revocation += other.uses_after_revocation;
        self.served_after_revocation += other.served_after_revocation;
    }

    pub fn read(path: &Path) -> anyhow::Result<Record> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_keeps_every_id_and_adds_every_count() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut left = Record {
            claimed: vec![a],
            claim_calls: 1,
            claimed_total: 1,
            ..Record::default()
        };
        left.merge(Record {
            claimed: vec![a, b],
            claim_calls: 2,
            claimed_total: 2,
            empty_claims: 1,
            requested_total: 7,
            tasks_created: 3,
            ..Record::default()
        });
        assert_eq!(left.claimed, vec![a, a, b]);
        assert_eq!(
            (left.claim_calls, left.claimed_total, left.empty_claims),
            (3, 3, 1)
        );
        assert_eq!((left.requested_total, left.tasks_created), (7, 3));
    }

    #[test]
    fn a_written_record_reads_back_the_same() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("harness-record-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("record.json");
        let record = Record {
            registered: vec![Uuid::new_v4()],
            accepted_after_logout: 2,
            ..Record::default()
        };
        record.write(&path)?;
        assert_eq!(Record::read(&path)?, record);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
