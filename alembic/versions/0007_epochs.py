"""Epochs: one secret for many sealed appends of an actor, checked, not written, per append.

Revision ID: 0007
Revises: 0006

Why (benchmarks/RESULTS.md, "Encryption")
-----------------------------------------
Since 0005 every sealed append wrote one ``memory_event_secrets`` row (its batch's
secrets). For single events that row was most of what encryption cost the server, and in
a group of appends (four writers) one row per request: sealed single events reached 0.76
of the clear rate with four writers, 0.88 with the row left out (same machine, same run
length). An **epoch** (memory/log/sealing.py) is one row of the same table, named ``e:...``,
holding one 32-byte secret that seals up to about a thousand events of one actor, made by
the library before the first of them. An append sealed under an epoch writes no secrets
row; it only checks, with ``memory_check_epochs``, that its epoch still exists, and holds
it (a shared advisory lock) until commit: a forget that destroys the epoch takes that lock
exclusively, so it waits for the append, then sees its events. A destroyed epoch fails
the append (MM004, nothing written) and the library seals again under a new one.

Forgetting one event of an epoch destroys the epoch (memory/forget.py): the keys of its
other events are kept instead, one ``memory_event_keys`` row each, masked under the
actor's key, so they stay readable and the forgotten event's key is derivable from
nothing left. Forgetting an actor deletes its epochs with its key (their ``key_id`` is the
actor key's), as it deletes its batches.

The append functions of 0005 and 0006 are unchanged: an epoch request carries no actor key
id (so no key check and no secrets row there) and its epoch as the batch, which is what
its events' ``key_id`` records. The statements (memory/log/sql.py) call the check first
and pass its result on, so the check runs before the append it guards.

Downgrading below 0007 drops the check only; the code of earlier revisions cannot open
events sealed under epochs (it would read them as forgotten), so downgrade the code with
the schema only on a database that has none.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = """
-- Hold the epochs p_epochs until commit; MM004 when one is gone. Returns p_tenant, which
-- the statements pass on to the append so that it runs after this.
--
-- "Hold" is a shared advisory lock on the epoch (memory_epoch_lock), which a forget that
-- destroys it takes exclusively first (memory/forget.py): the forget waits for the
-- appends holding it, and an append that comes later waits for the forget, then looks
-- the epoch up in a snapshot taken after that (a statement of its own) and finds it gone.
-- Not a row lock: FOR KEY SHARE on the epoch's row wrote to the row at every append and,
-- with two appends of one actor in flight, made a MultiXact (four writers of one actor:
-- 0.83-0.84 of clear with it, 0.92 without, one run each). One look-up per epoch by
-- equality, not one with "= ANY (p_epochs)": PL/pgSQL would plan that afresh on every
-- call (its generic plan is estimated dearer than a custom one), ~170 us of server CPU.
CREATE FUNCTION memory_epoch_lock(p_epoch text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT hashtextextended('memory epoch ' || p_epoch, 0) $$;

CREATE FUNCTION memory_check_epochs(p_tenant text, p_epochs text[])
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_epoch text;
BEGIN
    FOREACH v_epoch IN ARRAY p_epochs LOOP
        PERFORM pg_advisory_xact_lock_shared(memory_epoch_lock(v_epoch));
        PERFORM FROM memory_event_secrets s
         WHERE s.tenant = p_tenant AND s.batch = v_epoch AND s.batch LIKE 'e:%';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the epoch % was destroyed (a forget since it was made)',
                            v_epoch USING ERRCODE = 'MM004';
        END IF;
    END LOOP;
    RETURN p_tenant;
END $$;
"""

DOWNGRADE = """
DROP FUNCTION memory_check_epochs(text, text[]);
DROP FUNCTION memory_epoch_lock(text);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
