-- V6: each organization's shared files. Never edit a migration once it has landed.
--
-- The bytes live on disk under MOAT_FILES_DIR/<org id>/<file id> — the
-- uploader's name never reaches the filesystem; it is metadata, cleaned
-- (src/files/name.rs). A row is inserted only after its file is durably in
-- place, and deleted before its file is removed, so a row never points at a
-- missing file; files without a row (a crash in between) are swept.

CREATE TABLE files (
    id            uuid        NOT NULL,
    org_id        uuid        NOT NULL REFERENCES orgs (id),
    name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    size          bigint      NOT NULL CHECK (size >= 0),
    sha256        text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type  text        NOT NULL,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT files_pkey PRIMARY KEY (id)
);
CREATE INDEX files_org_created_idx ON files (org_id, created_at, id);

ALTER TABLE files ENABLE ROW LEVEL SECURITY;
ALTER TABLE files FORCE ROW LEVEL SECURITY;
CREATE POLICY files_tenant ON files TO moat_runtime
    USING (org_id = moat_org()) WITH CHECK (org_id = moat_org());
GRANT SELECT, INSERT, DELETE ON files TO moat_runtime;
