-- Migrations recorded by refinery, to compare with those embedded in the binary.
SELECT version, name, checksum
FROM refinery_schema_history
ORDER BY version
