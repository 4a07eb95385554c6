-- Provider credentials, encrypted at rest (AES-256-GCM, see workers/vault.py).
-- The id is chosen by the writer, not the database: it is part of the associated
-- data, so it must be known before the row is encrypted.
CREATE TABLE credentials (
    id          uuid        PRIMARY KEY,
    tenant      text        NOT NULL,
    provider    text        NOT NULL,
    name        text        NOT NULL,
    key_id      text        NOT NULL,
    nonce       bytea       NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext  bytea       NOT NULL CHECK (octet_length(ciphertext) > 16),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- A name is unique per tenant and provider among live credentials; a revoked
-- one frees its name for a replacement.
CREATE UNIQUE INDEX credentials_live_name
    ON credentials (tenant, provider, name) WHERE revoked_at IS NULL;

-- Rotation and the worker start-up check look rows up by key id.
CREATE INDEX credentials_key_id ON credentials (key_id);
