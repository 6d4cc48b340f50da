-- Which of these ids have a row (the orphan sweep keeps exactly those files).
SELECT id FROM files WHERE org_id = $1 AND id = ANY($2::uuid[])
