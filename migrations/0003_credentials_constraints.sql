-- Constraints 0001 left to the application: no empty tenant, provider, name or
-- key id; no revocation before creation; no nonce used twice under one key id
-- (AES-GCM with a repeated nonce leaks the XOR of the two plaintexts and lets the
-- authentication key be recovered).
--
-- Written for a live table that already holds rows:
-- * ALTER TABLE needs an ACCESS EXCLUSIVE lock, and while it waits every reader
--   (each worker opening a credential) queues behind it. Give up after 5 s
--   instead: the whole file rolls back and `llm-fleet migrate` can simply run again.
-- * The CHECKs are added NOT VALID: enforced at once for every row written from
--   now on, without judging the rows already there. The function below then
--   validates each constraint no existing row breaks, and reports the ids of rows
--   that do break one instead of failing (a migration that fails would keep every
--   worker that runs `llm-fleet migrate` at start-up from starting, over rows an
--   operator has to look at anyway) or changing data behind the operator's back.
--   `llm-fleet migrate` calls it on every run and prints what is still pending.
SET LOCAL lock_timeout = '5s';

ALTER TABLE credentials
    ADD CONSTRAINT credentials_tenant_not_empty CHECK (length(tenant) > 0) NOT VALID,
    ADD CONSTRAINT credentials_provider_not_empty CHECK (length(provider) > 0) NOT VALID,
    ADD CONSTRAINT credentials_name_not_empty CHECK (length(name) > 0) NOT VALID,
    ADD CONSTRAINT credentials_key_id_not_empty CHECK (length(key_id) > 0) NOT VALID,
    ADD CONSTRAINT credentials_revoked_after_created
        CHECK (revoked_at IS NULL OR revoked_at >= created_at) NOT VALID;

-- One row per constraint that was not yet in force when called: 'validated' (it is
-- now) or 'pending' with the ids of the rows that break it. A UNIQUE constraint
-- cannot be NOT VALID, so (key_id, nonce) is created only once no two rows share
-- a pair; until then it is reported pending like the CHECKs. Its index is built
-- with CREATE UNIQUE INDEX (a SHARE lock: workers keep reading, writers wait for
-- the build) and then attached as the constraint, which takes the exclusive lock
-- only for a catalogue change.
CREATE FUNCTION llm_fleet_finish_credential_constraints()
RETURNS TABLE (check_name text, state text, row_ids uuid[])
LANGUAGE plpgsql AS $fn$
DECLARE
    con record;
    bad uuid[];
BEGIN
    FOR con IN
        SELECT c.conname::text AS name, pg_get_expr(c.conbin, c.conrelid) AS expr
        FROM pg_constraint c
        WHERE c.conrelid = 'credentials'::regclass AND c.contype = 'c' AND NOT c.convalidated
        ORDER BY c.conname
    LOOP
        -- A CHECK holds when its expression is true or null, so only FALSE breaks it.
        EXECUTE format(
            'SELECT array_agg(id ORDER BY id) FROM credentials WHERE (%s) IS FALSE', con.expr
        ) INTO bad;
        check_name := con.name;
        IF bad IS NULL THEN
            EXECUTE format('ALTER TABLE credentials VALIDATE CONSTRAINT %I', con.name);
            state := 'validated';
        ELSE
            state := 'pending';
        END IF;
        row_ids := bad;
        RETURN NEXT;
    END LOOP;

    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint c
        WHERE c.conrelid = 'credentials'::regclass AND c.conname = 'credentials_key_id_nonce_key'
    ) THEN
        SELECT array_agg(a.id ORDER BY a.id) INTO bad
        FROM credentials a
        WHERE EXISTS (
            SELECT 1 FROM credentials b
            WHERE b.key_id = a.key_id AND b.nonce = a.nonce AND b.id <> a.id
        );
        check_name := 'credentials_key_id_nonce_key';
        row_ids := bad;
        state := 'pending';
        IF bad IS NULL THEN
            BEGIN
                CREATE UNIQUE INDEX IF NOT EXISTS credentials_key_id_nonce_key
                    ON credentials (key_id, nonce);
                ALTER TABLE credentials ADD CONSTRAINT credentials_key_id_nonce_key
                    UNIQUE USING INDEX credentials_key_id_nonce_key;
                state := 'validated';
            EXCEPTION WHEN unique_violation THEN
                -- A duplicate was written between the look above and the build:
                -- stay pending; the next run names the rows.
                NULL;
            END;
        END IF;
        RETURN NEXT;
    END IF;
END
$fn$;

SELECT * FROM llm_fleet_finish_credential_constraints();
