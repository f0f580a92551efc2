//! The concurrency kit: start participants together, record what each did,
//! and check the history against a fresh read of the database. Every checker
//! returns the exact counter-example when it fails.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::Barrier;

/// Runs `n` participants as separate tasks, releases them at the same instant
/// through a barrier (no sleeps), and returns every participant's result in
/// participant order. Each participant should use its own connection/client.
pub async fn run_together<T, F, Fut>(n: usize, participant: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = participant(i);
            tokio::spawn(async move {
                barrier.wait().await;
                work.await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        match handle.await {
            Ok(v) => results.push(v),
            Err(e) => panic!("participant failed: {e}"),
        }
    }
    results
}

/// One recorded operation.
#[derive(Debug, Clone)]
pub struct Op<R> {
    pub participant: usize,
    pub kind: &'static str,
    pub arg: String,
    pub start: Instant,
    pub end: Instant,
    pub result: R,
}

/// A shared, append-only record of operations with their real-time bounds.
#[derive(Debug)]
pub struct History<R> {
    ops: Arc<Mutex<Vec<Op<R>>>>,
}

impl<R> Clone for History<R> {
    fn clone(&self) -> Self {
        History {
            ops: self.ops.clone(),
        }
    }
}

impl<R: Clone> Default for History<R> {
    fn default() -> Self {
        History {
            ops: Arc::default(),
        }
    }
}

impl<R: Clone> History<R> {
    /// Runs `op`, recording when it started and ended and what it returned.
    pub async fn record(
        &self,
        participant: usize,
        kind: &'static str,
        arg: impl Into<String>,
        op: impl Future<Output = R>,
    ) -> R {
        let start = Instant::now();
        let result = op.await;
        let end = Instant::now();
        let entry = Op {
            participant,
            kind,
            arg: arg.into(),
            start,
            end,
            result: result.clone(),
        };
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
        result
    }

    pub fn ops(&self) -> Vec<Op<R>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Every value appears once; on failure, the repeated values and who had them.
pub fn check_unique<K: Eq + Hash + Debug + Clone>(items: &[(usize, K)]) -> Result<(), String> {
    let mut seen: HashMap<K, Vec<usize>> = HashMap::new();
    for (who, value) in items {
        seen.entry(value.clone()).or_default().push(*who);
    }
    let dupes: Vec<_> = seen.into_iter().filter(|(_, who)| who.len() > 1).collect();
    if dupes.is_empty() {
        Ok(())
    } else {
        Err(format!("duplicates (value -> participants): {dupes:?}"))
    }
}

/// Linearizability of revocation, in its simplest form: no operation of kind
/// `validate` that started after an operation of kind `revoke` on the same
/// `arg` had returned may have succeeded.
pub fn check_no_success_after_revoke<R: Debug>(
    ops: &[Op<R>],
    succeeded: impl Fn(&R) -> bool,
) -> Result<(), String> {
    for revoke in ops.iter().filter(|o| o.kind == "revoke") {
        for v in ops
            .iter()
            .filter(|o| o.kind == "validate" && o.arg == revoke.arg)
        {
            if v.start > revoke.end && succeeded(&v.result) {
                return Err(format!(
                    "validation by participant {} started {:?} after revocation by participant {} returned, yet succeeded: {:?}",
                    v.participant,
                    v.start - revoke.end,
                    revoke.participant,
                    v.result
                ));
            }
        }
    }
    Ok(())
}

/// What one claim call reported.
#[derive(Debug, Clone)]
pub struct ReportedClaim<Id> {
    pub participant: usize,
    pub assignee: Id,
    pub claimed: usize,
    pub tasks: Vec<Id>,
}

/// Tallies claims per task id against a fresh read of `(task, assignee)` for
/// every task the database holds as assigned. Fails on: a claim whose
/// `claimed` differs from the tasks it listed; a task reported by two claims
/// (duplicate); a task assigned in the database that no claim reported, or a
/// reported task the database does not hold for that assignee (loss); and
/// totals that disagree.
pub fn check_claims<Id: Ord + Hash + Debug + Clone>(
    claims: &[ReportedClaim<Id>],
    db_assigned: &[(Id, Id)],
) -> Result<(), String> {
    let mut problems = Vec::new();
    for c in claims {
        if c.claimed != c.tasks.len() {
            problems.push(format!(
                "participant {} reported claimed={} but listed {} tasks",
                c.participant,
                c.claimed,
                c.tasks.len()
            ));
        }
    }
    let mut reported: BTreeMap<Id, Vec<(usize, Id)>> = BTreeMap::new();
    for c in claims {
        for t in &c.tasks {
            reported
                .entry(t.clone())
                .or_default()
                .push((c.participant, c.assignee.clone()));
        }
    }
    for (task, by) in &reported {
        if by.len() > 1 {
            problems.push(format!(
                "task {task:?} claimed by several participants: {by:?}"
            ));
        }
    }
    let in_db: BTreeMap<Id, Id> = db_assigned.iter().cloned().collect();
    for (task, assignee) in &in_db {
        match reported.get(task) {
            None => problems.push(format!(
                "task {task:?} is assigned to {assignee:?} in the database but no claim reported it"
            )),
            Some(by) if !by.iter().any(|(_, a)| a == assignee) => problems.push(format!(
                "task {task:?} is held by {assignee:?} in the database, but was reported for {by:?}"
            )),
            Some(_) => {}
        }
    }
    for (task, by) in &reported {
        if !in_db.contains_key(task) {
            problems.push(format!(
                "task {task:?} reported claimed by {by:?} is not assigned in the database"
            ));
        }
    }
    let reported_total: usize = claims.iter().map(|c| c.claimed).sum();
    if reported_total != in_db.len() {
        problems.push(format!(
            "claims reported {reported_total} in total, the database holds {} assigned",
            in_db.len()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// Tokens from a CSPRNG are independent: any two 256-bit tokens differ in
/// about 128 bits (standard deviation 8). Fewer than 64 differing bits
/// between any pair (an 8-sigma event) means the generator is not random.
pub fn check_independent_bits(tokens: &[Vec<u8>]) -> Result<(), String> {
    for (i, a) in tokens.iter().enumerate() {
        for (j, b) in tokens.iter().enumerate().skip(i + 1) {
            let differing: u32 = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
            if differing < 64 {
                return Err(format!(
                    "tokens {i} and {j} differ in only {differing} of 256 bits"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_tally_catches_duplicates_losses_and_false_counts() {
        let ok = [ReportedClaim {
            participant: 0,
            assignee: 9,
            claimed: 2,
            tasks: vec![1, 2],
        }];
        assert!(check_claims(&ok, &[(1, 9), (2, 9)]).is_ok());
        let dup = [
            ReportedClaim {
                participant: 0,
                assignee: 9,
                claimed: 1,
                tasks: vec![1],
            },
            ReportedClaim {
                participant: 1,
                assignee: 8,
                claimed: 1,
                tasks: vec![1],
            },
        ];
        assert!(check_claims(&dup, &[(1, 8)]).is_err());
        let lost = [ReportedClaim {
            participant: 0,
            assignee: 9,
            claimed: 1,
            tasks: vec![1],
        }];
        assert!(check_claims(&lost, &[(1, 9), (2, 9)]).is_err());
        let inflated = [ReportedClaim {
            participant: 0,
            assignee: 9,
            claimed: 3,
            tasks: vec![1],
        }];
        assert!(check_claims(&inflated, &[(1, 9)]).is_err());
    }

    #[test]
    fn independence_check_catches_a_counter() {
        let counter: Vec<Vec<u8>> = (0u64..5)
            .map(|i| [vec![0; 24], i.to_be_bytes().to_vec()].concat())
            .collect();
        assert!(check_independent_bits(&counter).is_err());
    }
}
