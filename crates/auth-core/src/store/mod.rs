//! Every statement of the rules. Every function takes
//! `&mut AsyncPgConnection`, so a caller can compose several inside one
//! transaction, and tests can run them step by step on connections they
//! control to force an interleaving.
//!
//! Time is always the database's `now()`: one clock for every instance.

pub mod api_keys;
pub mod login_attempts;
pub mod password_resets;
pub mod retention;
pub mod sessions;
pub mod tasks;
pub mod users;

use std::time::Duration;

/// A duration as the `double precision` seconds that `make_interval(secs => ...)` takes.
pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Raw SQL (`sql_query`) that diesel keeps as a prepared statement.
///
/// diesel never caches `sql_query`: it cannot know the text is fixed, so
/// every call is planned anew and costs two round trips (parse, then run).
/// Wrapped in [`Prepared::prepared`], the statement is cached per
/// connection by its text and bind types: planned once, one round trip per
/// call. Only for SQL whose text never carries a value (values are binds),
/// or the cache would grow with every value.
pub(crate) trait Prepared: Sized {
    fn prepared(self) -> Cached<Self> {
        Cached(self)
    }
}

impl<Q: diesel::query_builder::Query> Prepared for Q {}

/// See [`Prepared`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cached<Q>(Q);

impl<Q: diesel::query_builder::QueryFragment<diesel::pg::Pg>>
    diesel::query_builder::QueryFragment<diesel::pg::Pg> for Cached<Q>
{
    fn walk_ast<'b>(
        &'b self,
        pass: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    /// The text is fixed (see [`Prepared`]), whatever the inner query says.
    fn is_safe_to_cache_prepared(&self, _backend: &diesel::pg::Pg) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Cached<Q> {
    type QueryId = ();
    // Keyed by its text, not by a Rust type: one type serves many statements.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Cached<Q> {
    type SqlType = Q::SqlType;
}
