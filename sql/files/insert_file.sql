INSERT INTO files (id, org_id, name, size, sha256, content_type, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING id, name, size, sha256, content_type, created_at
