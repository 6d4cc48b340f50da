-- A run no runner holds yet is cancelled on the spot.
UPDATE runs SET status = 'cancelled', finished_at = now()
WHERE id = $1 AND org_id = $2 AND status = 'queued'
