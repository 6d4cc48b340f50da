-- A new secret: the old one stops working, and so do tokens minted with it
-- (their generation no longer matches; the trigger of V9 tells every instance).
UPDATE service_clients SET secret_hash = $3, secret_rotated_at = now(), secret_generation = secret_generation + 1
WHERE id = $1 AND org_id = $2
