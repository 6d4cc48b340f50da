-- The integration as it is now, read again under the refresh lock.
SELECT provider, status, access_token, refresh_token, refresh_count, created_by,
       extract(epoch FROM access_expires_at - now())::float8 AS valid_secs,
       extract(epoch FROM now() - last_refreshed_at)::float8 AS since_refresh,
       COALESCE(ceil(extract(epoch FROM cooldown_until - now())), 0)::bigint AS cooldown_secs
FROM integrations
WHERE id = $1 AND org_id = $2
