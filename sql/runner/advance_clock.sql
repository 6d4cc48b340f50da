-- A recovery tick's first statement, on its own (moat_advance_clock, V10):
-- advance the database clock and give live leases back the time nobody could
-- reach the database ($1 the tick interval, $2 the gap that counts as an
-- outage, in seconds). Returns the gap seen.
SELECT moat_advance_clock($1, $2) AS gap
