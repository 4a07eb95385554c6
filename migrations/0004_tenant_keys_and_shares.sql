-- Issue 11: credentials belong to tenants, and rows are encrypted under a key
-- derived for that purpose (see workers/crypto.py and workers/vault.py).
--
-- `scheme` says how a row (or key-check record) was written:
--   1  under the fleet key itself, row AAD naming id and provider (everything
--      written before this migration: the default below marks it so, and code
--      that does not know the column yet writes exactly such rows);
--   2  under the HKDF-derived vault-row (or key-check) key, row AAD naming id,
--      provider and the owner tenant.
-- Workers open both; `llm-fleet creds rotate` moves scheme-1 rows to scheme 2.
-- Adding a column with a constant default rewrites nothing (PostgreSQL 11+); the
-- CHECKs are added NOT VALID and validated by the function of 0003 (below), so
-- the exclusive lock is held only for catalogue changes.
SET LOCAL lock_timeout = '5s';

ALTER TABLE credentials
    ADD COLUMN scheme smallint NOT NULL DEFAULT 1,
    ADD CONSTRAINT credentials_scheme_known CHECK (scheme IN (1, 2)) NOT VALID;

ALTER TABLE vault_key_checks
    ADD COLUMN scheme smallint NOT NULL DEFAULT 1,
    ADD CONSTRAINT vault_key_checks_scheme_known CHECK (scheme IN (1, 2)) NOT VALID;
ALTER TABLE vault_key_checks VALIDATE CONSTRAINT vault_key_checks_scheme_known;

-- Rows still to upgrade, found without a scan (the worker counts them at start).
CREATE INDEX credentials_legacy_scheme ON credentials (id) WHERE scheme = 1;

-- A credential its owner lets another tenant's jobs use (`llm-fleet creds share`).
-- Deleting a credential row deletes its shares; revoking it leaves them (a
-- revoked credential opens for nobody).
CREATE TABLE credential_shares (
    credential_id uuid        NOT NULL REFERENCES credentials (id) ON DELETE CASCADE,
    tenant        text        NOT NULL CHECK (length(tenant) > 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (credential_id, tenant)
);

SELECT * FROM llm_fleet_finish_credential_constraints();
