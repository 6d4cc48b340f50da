DELETE FROM files WHERE id = $1 AND org_id = $2 RETURNING id
