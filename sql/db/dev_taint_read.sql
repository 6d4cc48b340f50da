-- The development-taint marker, if a development-mode Moat ever wrote here.
SELECT marked_at, marked_by
FROM moat_dev_taint
LIMIT 1
