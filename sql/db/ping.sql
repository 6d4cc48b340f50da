-- Readiness: one real round trip.
SELECT 1
