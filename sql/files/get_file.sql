SELECT id, name, size, sha256, content_type, created_at FROM files WHERE id = $1 AND org_id = $2
