-- Who may do what (interface v2, "Roles"). The three words are declared
-- once, here, as a type: a statement naming a role that does not exist
-- fails when it is parsed. Users that existed before roles keep what v1
-- let every user do (`worker`, `assigner`): that default is set with the
-- column (no rewrite of `users`), then replaced by no role at all, so a row
-- inserted without naming its roles may do nothing. The first admin is
-- made on the command line (`auth-api users create --role admin`).

CREATE TYPE user_role AS ENUM ('worker', 'assigner', 'admin');

ALTER TABLE users
    ADD COLUMN roles user_role[] NOT NULL DEFAULT '{worker,assigner}',
    ADD COLUMN disabled_at timestamptz;
ALTER TABLE users ALTER COLUMN roles SET DEFAULT '{}';
