-- The provider refused the refresh token: the user must connect again.
UPDATE integrations SET status = 'needs_reauth', updated_at = now()
WHERE id = $1 AND org_id = $2
