-- The login limit counts the failures reported since the email's last
-- success was reported: a guess admitted before the success but checked
-- after it still counts (ordering by admission id forgave it). When an
-- attempt's outcome was reported, by the database's clock.
ALTER TABLE login_attempts ADD COLUMN settled_at timestamptz;
UPDATE login_attempts SET settled_at = attempted_at WHERE outcome <> 'pending';
