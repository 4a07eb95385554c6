-- The audit trail (issue 12, see workers/audit.py): one row per settled job attempt,
-- written by the worker before it acks the job, in batches.
--
-- Needs PostgreSQL 15 or later (UNIQUE NULLS NOT DISTINCT).
--
-- Both tables are range-partitioned by month of `started_at` (when the worker took
-- the delivery, UTC months), so retention drops whole months (`llm-fleet audit prune`),
-- which is instant, instead of deleting rows, which is not (docs/architecture.md has
-- the figures). `started_at` is part of the key because a partitioned table's unique
-- key must hold its partition key; it is fixed per delivery, so a record written
-- twice (a retried batch whose commit went unanswered, the same record handed in
-- again) still meets itself. Distinct deliveries of one attempt number (which the
-- broker's count never produces) would be kept apart, which is what they are.
SET LOCAL lock_timeout = '5s';

CREATE TABLE audit_attempts (
    request_id          text,          -- NULL: a refused message without a readable id
    producer            text,          -- the tenant (broker-validated login); NULL: none
    submission          integer          NOT NULL,
    attempt             integer          NOT NULL,
    started_at          timestamptz      NOT NULL,
    recorded_at         timestamptz      NOT NULL DEFAULT now(),
    kind                text             NOT NULL,
    queue               text             NOT NULL,
    worker              text             NOT NULL,
    status              text             NOT NULL,  -- 'ok' or the error code sent
    error               text,                       -- the error message sent, cut
    -- The target that answered, or failed last; never a key, only a stored
    -- credential's id (NULL for a sealed one).
    provider            text,
    model               text,
    credential_id       text,
    tried               jsonb            NOT NULL DEFAULT '[]',  -- targets failed over before
    provider_request_id text,
    queue_ms            real,
    ttft_ms             real,
    provider_ms         real,
    total_ms            real,
    retries             integer          NOT NULL DEFAULT 0,
    -- NULL where the provider reported nothing (not 0, which would claim "none").
    input_tokens        bigint,
    output_tokens       bigint,
    total_tokens        bigint,
    cached_input_tokens bigint,
    cache_write_tokens  bigint,
    reasoning_tokens    bigint,
    search_units        bigint,
    cost_usd            double precision,           -- NULL: unknown, which is not free
    metadata            jsonb            NOT NULL DEFAULT '{}',
    dead_lettered       boolean          NOT NULL DEFAULT false,
    reached_provider    boolean          NOT NULL DEFAULT false,
    -- Leading with request_id, it also serves `llm-fleet audit show`.
    CONSTRAINT audit_attempts_once
        UNIQUE NULLS NOT DISTINCT (request_id, producer, submission, attempt, started_at)
) PARTITION BY RANGE (started_at);

-- `audit tail` and `--follow` read by arrival; summaries by time, tenant, target.
CREATE INDEX audit_attempts_recorded ON audit_attempts (recorded_at);
CREATE INDEX audit_attempts_tenant ON audit_attempts (producer, started_at);
CREATE INDEX audit_attempts_target ON audit_attempts (provider, model, started_at);

-- Request and response bodies, written only with FLEET_AUDIT_BODIES=true, scrubbed of
-- secrets before they get here. Keyed and partitioned like the attempts, so pruning
-- drops both together.
CREATE TABLE audit_bodies (
    request_id  text,
    producer    text,
    submission  integer     NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    request     jsonb,
    response    jsonb,
    CONSTRAINT audit_bodies_once
        UNIQUE NULLS NOT DISTINCT (request_id, producer, submission, attempt, started_at)
) PARTITION BY RANGE (started_at);

-- Creates the monthly partitions of both tables for `months` months from the one
-- holding `first_month` (UTC); returns the names it created. Workers call it ahead
-- of time (at start, and for a month a batch needs that is missing), and so does
-- `llm-fleet audit prune`. The advisory lock keeps two callers from racing on one name.
-- Creating a partition locks the parent table (ACCESS EXCLUSIVE, for a moment), so
-- callers bound the wait with lock_timeout rather than queue every insert behind it.
CREATE FUNCTION llm_fleet_audit_partitions(first_month timestamptz, months integer)
RETURNS SETOF text
LANGUAGE plpgsql AS $fn$
DECLARE
    month_start timestamp := date_trunc('month', first_month AT TIME ZONE 'UTC');
    parent text;
    part text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('llm-fleet audit partitions'));
    FOR i IN 0 .. months - 1 LOOP
        FOREACH parent IN ARRAY ARRAY['audit_attempts', 'audit_bodies'] LOOP
            part := parent || to_char(month_start, '"_y"YYYY"m"MM');
            IF to_regclass(part) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                    part, parent,
                    month_start AT TIME ZONE 'UTC',
                    (month_start + interval '1 month') AT TIME ZONE 'UTC'
                );
                RETURN NEXT part;
            END IF;
        END LOOP;
        month_start := month_start + interval '1 month';
    END LOOP;
END
$fn$;

SELECT llm_fleet_audit_partitions(now(), 3);
