-- Key-check records (see workers/vault.py): one per key id, an AES-256-GCM
-- encryption of a fixed, public text naming the key id, under associated data
-- that names this purpose (never a credential row's). A worker decides whether
-- its key for a key id is the right one by opening this record, not by trying
-- credential rows: a damaged row then reads as damaged, not as a wrong key.
-- Nothing here is secret; the record only proves which key wrote it.
CREATE TABLE vault_key_checks (
    key_id      text        PRIMARY KEY CHECK (length(key_id) > 0),
    nonce       bytea       NOT NULL CHECK (octet_length(nonce) = 12),
    ciphertext  bytea       NOT NULL CHECK (octet_length(ciphertext) > 16),
    created_at  timestamptz NOT NULL DEFAULT now()
);
