-- The backfill's content cache (issue 13, see workers/backfill/cache.py): vectors of
-- texts already embedded, so a rerun into another output, a second corpus that
-- shares texts, or a text repeated inside one corpus is not paid for twice.
--
-- `key` is a SHA-256 over the tenant (the producer's broker login), provider, model,
-- dimensions, input_type and the text, length-prefixed field by field: no text is
-- stored, and one tenant cannot learn whether another embedded a text. `vector` is
-- float32 little-endian, `dims` values (the wire form of contracts.frames.Embeddings).
--
-- Rows are only ever inserted (ON CONFLICT DO NOTHING: a vector for a key never
-- changes). Pruning is plain SQL, no CLI, e.g. keep 90 days:
--     DELETE FROM embedding_cache WHERE created_at < now() - interval '90 days';
-- The BRIN index below makes that cheap: rows arrive in created_at order, so a
-- block-range index a few pages big serves it without taxing inserts as a B-tree would.
SET LOCAL lock_timeout = '5s';

CREATE TABLE embedding_cache (
    key        bytea       PRIMARY KEY CHECK (octet_length(key) = 32),
    dims       integer     NOT NULL CHECK (dims > 0),
    vector     bytea       NOT NULL CHECK (octet_length(vector) = dims * 4),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX embedding_cache_created ON embedding_cache USING brin (created_at);
