//! Deliberately broken variants of the concurrency-critical code, compiled
//! only with the test-only `faults` feature and chosen at run time by
//! `TESSERA_FAULT=<name>`. They exist to prove that the concurrency tests can
//! fail (`cargo xtask prove`); a normal build does not contain this module.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every deliberate fault, by the name `TESSERA_FAULT` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Claim as SELECT ... FOR UPDATE SKIP LOCKED, then a separate UPDATE.
    ClaimTwoStatements,
    /// Claim with FOR UPDATE but without SKIP LOCKED (claimers queue).
    ClaimWithoutSkipLocked,
    /// Claim reports `requested` as `claimed`.
    ClaimReportsRequested,
    /// Login counts and evicts sessions without locking the user row.
    SessionLimitWithoutLock,
    /// Refresh does not check that the session is still unrevoked.
    RefreshWithoutRevokedGuard,
    /// The last-seen touch writes back the revoked_at it read.
    TouchCanUnrevoke,
    /// Tokens come from a counter instead of the OS CSPRNG.
    LowEntropyToken,
    /// Complete/release check neither the assignee nor the lease.
    CompleteWithoutFence,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::ClaimTwoStatements,
        Fault::ClaimWithoutSkipLocked,
        Fault::ClaimReportsRequested,
        Fault::SessionLimitWithoutLock,
        Fault::RefreshWithoutRevokedGuard,
        Fault::TouchCanUnrevoke,
        Fault::LowEntropyToken,
        Fault::CompleteWithoutFence,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::ClaimTwoStatements => "claim_two_statements",
            Fault::ClaimWithoutSkipLocked => "claim_without_skip_locked",
            Fault::ClaimReportsRequested => "claim_reports_requested",
            Fault::SessionLimitWithoutLock => "session_limit_without_lock",
            Fault::RefreshWithoutRevokedGuard => "refresh_without_revoked_guard",
            Fault::TouchCanUnrevoke => "touch_can_unrevoke",
            Fault::LowEntropyToken => "low_entropy_token",
            Fault::CompleteWithoutFence => "complete_without_fence",
        }
    }

    pub fn from_name(name: &str) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Whether `fault` was chosen for this process.
pub fn active(fault: Fault) -> bool {
    static CHOSEN: OnceLock<Option<Fault>> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        std::env::var("TESSERA_FAULT")
            .ok()
            .and_then(|n| Fault::from_name(n.trim()))
    }) == Some(fault)
}

/// A "token" that is unique but predictable: a counter in the last 8 bytes.
pub(crate) fn counter_token() -> crate::domain::SessionToken {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut bytes = [0u8; 32];
    bytes[24..].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    crate::domain::SessionToken::from_bytes(bytes)
}
