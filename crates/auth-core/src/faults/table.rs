// The one list of deliberate faults: each variant, the name `TESSERA_FAULT`
// takes, and what it breaks. auth-core builds `Fault` from it and xtask's
// `prove` its list of runs (both `include!` this file), so a fault added here
// is defined, named and proved at once.

faults! {
    /// Claim as SELECT ... FOR UPDATE SKIP LOCKED, then a separate UPDATE.
    ClaimTwoStatements => "claim_two_statements",
    /// Claim with FOR UPDATE but without SKIP LOCKED (claimers queue).
    ClaimWithoutSkipLocked => "claim_without_skip_locked",
    /// Claim reports `requested` as `claimed`.
    ClaimReportsRequested => "claim_reports_requested",
    /// Login counts and evicts sessions without locking the user row.
    SessionLimitWithoutLock => "session_limit_without_lock",
    /// Login counts its user's active sessions from its snapshot without
    /// locking them: a revocation committing meanwhile is still counted,
    /// and the login evicts one session too many.
    LoginCountsUnlockedRows => "login_counts_unlocked_rows",
    /// Login locks its user's sessions in descending id order, where a
    /// revocation takes them ascending: the two can deadlock.
    LoginLocksSessionsOutOfOrder => "login_locks_sessions_out_of_order",
    /// Behind a transaction pooler a revocation still tries first without
    /// the user's lock, inside its transaction: it holds session rows while
    /// it waits for the user's lock, the other way round from a login.
    RevocationFirstTryInTransaction => "revocation_first_try_in_transaction",
    /// Refresh does not check that the session is still unrevoked.
    RefreshWithoutRevokedGuard => "refresh_without_revoked_guard",
    /// The last-seen touch writes back the revoked_at it read.
    TouchCanUnrevoke => "touch_can_unrevoke",
    /// Tokens come from a counter instead of the OS CSPRNG.
    LowEntropyToken => "low_entropy_token",
    /// Complete/release check neither the assignee nor the lease.
    CompleteWithoutFence => "complete_without_fence",
    /// Registration checks for the email first, then inserts ignoring conflicts.
    RegistrationCheckThenInsert => "registration_check_then_insert",
    /// Refresh reads the session by token, then updates it by id.
    RefreshSelectThenUpdate => "refresh_select_then_update",
    /// Revoke-all counts the active sessions, then revokes them.
    RevokeAllCountThenUpdate => "revoke_all_count_then_update",
    /// Logout and revocations act on the session their token opened when
    /// it was validated, whatever a refresh did to the token since.
    RevocationIgnoresRotation => "revocation_ignores_rotation",
    /// A revocation that a login's eviction raced (a row it saw active was
    /// ended before it locked it) acts on what it locked, without the
    /// login's new session, instead of running again under the user's lock.
    RevocationMissesRacingLogin => "revocation_misses_racing_login",
    /// Logout and revoke-all answer before their revocation has committed.
    RevocationBeforeCommit => "revocation_before_commit",
    /// A checkout that finds no free connection fails at once.
    PoolFailsFast => "pool_fails_fast",
    /// The login limit counts failures, verifies, and only then records one.
    LoginLimitCheckThenRecord => "login_limit_check_then_record",
    /// The login limit counts checks in flight like failures (v1.1's
    /// wording): correct logins that arrive together are refused.
    LoginLimitRefusesInFlight => "login_limit_refuses_in_flight",
    /// An admission that finds the email limited refuses only its own
    /// login: every login of a crowd for it queues for an admission of its own.
    LoginLimitRefusalNotShared => "login_limit_refusal_not_shared",
    /// The hash queue has neither a capacity nor a deadline.
    HashQueueUnbounded => "hash_queue_unbounded",
    /// Login locks the user row FOR UPDATE (blocks claims' key-share checks).
    UserLockForUpdate => "user_lock_for_update",
    /// A session's created_at is its transaction's start, not its issue.
    SessionCreatedAtTxStart => "session_created_at_tx_start",
    /// Task counts are folded as read-sums, delete-all, insert-sums.
    CountsFoldedInTwoStatements => "counts_folded_in_two_statements",
    /// Every class of request shares one pool (no bulkheads).
    OnePoolForEveryClass => "one_pool_for_every_class",
    /// The cleanup locks its batches FOR UPDATE without SKIP LOCKED (waits).
    CleanupWaitsOnLocks => "cleanup_waits_on_locks",
    /// Any rotated-away token presented again revokes its session, even
    /// within the grace window (parallel refreshes log the user out).
    ReuseWithoutGrace => "reuse_without_grace",
    /// A rotation does not remember the token it replaced (a stolen token
    /// presented after the grace revokes nothing).
    ReuseNotRemembered => "reuse_not_remembered",
    /// Create checks the idempotency keys with a plain NOT EXISTS, no
    /// ON CONFLICT and no locks on its keys (concurrent creates of one key
    /// collide on the index).
    KeyCheckThenInsert => "key_check_then_insert",
    /// A claim takes tasks whatever their attempts (no max_attempts).
    ClaimIgnoresMaxAttempts => "claim_ignores_max_attempts",
    /// A heartbeat extends any assigned task's lease (no assignee, no lease check).
    HeartbeatWithoutFence => "heartbeat_without_fence",
    /// Cancel from any status, finished ones included.
    CancelAnyStatus => "cancel_any_status",
    /// A long-poll claim sleeps out its wait after one empty try (no wake-ups,
    /// no re-check).
    LongPollNoRecheck => "long_poll_no_recheck",
    /// Tasks claimed for a caller that hung up stay leased to it.
    HungUpClaimsKept => "hung_up_claims_kept",
    /// actix keeps serving a request whose client hung up (half-closed
    /// connections allowed, its default).
    HangUpsIgnored => "hang_ups_ignored",
    /// Each long-poll waiter re-checks the queue every second on its own
    /// (the first design: database work grows with the number of waiters).
    LongPollRecheckPerWaiter => "long_poll_recheck_per_waiter",
    /// Long-poll claims wait without a bound per credential or instance.
    WaitersUnbounded => "waiters_unbounded",
    /// A JSON body is read whole and parsed into a `serde_json::Value`
    /// before its members are judged (memory follows what it holds).
    BodyReadWhole => "body_read_whole",
    /// Each instance keeps the roles a session's first validation read and
    /// serves its later requests with them (a role taken away stays in
    /// force where it was seen).
    RolesCachedPerInstance => "roles_cached_per_instance",
    /// Disabling revokes the user's sessions before taking the user's row
    /// lock: a login that held the lock meanwhile commits a session the
    /// revocation never saw.
    DisableRevokesBeforeLocking => "disable_revokes_before_locking",
    /// A login opens its session without re-reading, under the user's
    /// lock, whether the user was disabled while it checked the password.
    LoginIgnoresDisabled => "login_ignores_disabled",
    /// A login opens its session whatever became of the password it
    /// verified while it waited for the user's lock.
    LoginOpensAfterPasswordChange => "login_opens_after_password_change",
    /// A password change revokes the other sessions by the tokens its
    /// snapshot saw: one a refresh rotated meanwhile survives.
    PasswordChangeRevokesTokensSeen => "password_change_revokes_tokens_seen",
    /// A reset token is used without re-checking that it is unused: of
    /// concurrent uses, every one that read it before the winner wins too.
    ResetTokenUsedTwice => "reset_token_used_twice",
    /// A password change stores its new hash over whatever the password
    /// became since its current one was checked (a reset meanwhile).
    PasswordChangeIgnoresNewerPassword => "password_change_ignores_newer_password",
    /// A password change goes on whatever became of the caller's session
    /// since its validation (revoked meanwhile, say by a log out).
    PasswordChangeIgnoresRevokedCaller => "password_change_ignores_revoked_caller",
    /// Key creation counts the user's live keys without the user's lock,
    /// then inserts: creations that count together all pass the cap.
    ApiKeyCapCountedUnlocked => "api_key_cap_counted_unlocked",
    
    /// Each instance keeps the keys it validated and serves them again
    /// without asking (a revoked key keeps working where it was seen).
    ApiKeysCachedPerInstance => "api_keys_cached_per_instance",
    /// Disabling a user revokes its sessions, not its API keys (enabled
    /// again, its keys work again).
    DisableLeavesApiKeys => "disable_leaves_api_keys",
    /// A key is made without re-reading, under the owner's lock, whether
    /// the session asking for it is still active (one a password change
    /// revoked meanwhile still makes a key).
    KeyCreationIgnoresRevokedCaller => "key_creation_ignores_revoked_caller",
    /// A password change revokes the other sessions but leaves the user's
    /// API keys live.
    PasswordChangeLeavesApiKeys => "password_change_leaves_api_keys",
    /// A role taken from a user is left on its keys (they lack it only
    /// while the owner does: given back, it is theirs again).
    RoleRemovalLeavesKeyRoles => "role_removal_leaves_key_roles",
    /// Idempotency keys are looked up whoever created them (v1.1's global
    /// keys): another user's key returns that user's task.
    IdempotencyKeysGlobal => "idempotency_keys_global",
    /// A key sent again with other content returns the stored task
    /// instead of `409 key_conflict`.
    KeyConflictUnchecked => "key_conflict_unchecked",
    /// A keyed batch inserts without first locking its keys in order: two
    /// batches of one creator naming the same keys in other orders deadlock.
    KeyedBatchesUnordered => "keyed_batches_unordered",
    /// A keyed batch takes one lock per key: a crowd of the largest
    /// batches fills PostgreSQL's shared lock table.
    KeyLocksUnbounded => "key_locks_unbounded",
}
