-- Sets a moat.* setting for the current transaction only (is_local = true):
-- it ends with the transaction and never reaches the connection's next user.
SELECT set_config($1, $2, true)
