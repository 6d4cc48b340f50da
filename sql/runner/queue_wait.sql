-- How long a just-started run waited between its creation and this claim, and which attempt this is.
SELECT extract(epoch FROM now() - created_at)::float8 AS waited_secs, attempt FROM runs WHERE id = $1 AND org_id = $2
