-- A wake-up carrying only ids; delivered at commit.
SELECT pg_notify($1, $2)
