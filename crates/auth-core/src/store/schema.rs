//! diesel table definitions for the statements written with diesel's DSL.
//! Most of the store is raw SQL (`sql_query`), which diesel never caches as a
//! prepared statement; the hottest statement (validation) uses the DSL so
//! PostgreSQL parses and plans it once per connection, not once per request.

diesel::table! {
    sessions (id) {
        id -> Uuid,
        user_id -> Uuid,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        last_seen_at -> Timestamptz,
        idle_expires_at -> Timestamptz,
        absolute_expires_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}
