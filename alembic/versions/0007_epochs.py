"""Epochs: one secret for many sealed appends of an actor, checked, not written, per append.

Revision ID: 0007
Revises: 0006

Why (benchmarks/RESULTS.md, "Encryption")
-----------------------------------------
Since 0005 every sealed append wrote one ``memory_event_secrets`` row (its batch's
secrets). For single events that row was most of what encryption cost the server, and in
a group of appends (four writers) one row per request: sealed single events reached 0.76
of the clear rate with four writers, 0.88 with the row left out (same machine, same run
length). An **epoch** (memory/crypto.py) is one row of the same table, named ``e:...``,
holding one 32-byte secret that seals up to about a thousand events of one actor, made by
the library before the first of them. An append sealed under an epoch writes no secrets
row; it only checks, with ``memory_check_epochs``, that its epoch still exists, and holds
it (``FOR KEY SHARE``) until commit: a forget that destroys the epoch waits for the
append, then sees its events. A destroyed epoch fails the append (MM004, nothing written)
and the library seals again under a new one.

Forgetting one event of an epoch destroys the epoch (memory/forget.py): the keys of its
other events are kept instead, one ``memory_event_keys`` row each, masked under the
actor's key, so they stay readable and the forgotten event's key is derivable from
nothing left. Forgetting an actor deletes its epochs with its key (their ``key_id`` is the
actor key's), as it deletes its batches.

The append functions of 0005 and 0006 are unchanged: an epoch request carries no actor key
id (so no key check and no secrets row there) and its epoch as the batch, which is what
its events' ``key_id`` records. The statements (memory/log_sql.py) call the check first
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
-- Hold the epochs p_epochs (distinct names) until commit; MM004 when one is gone. Returns
-- p_tenant, which the statements pass on to the append so that it runs after this.
CREATE FUNCTION memory_check_epochs(p_tenant text, p_epochs text[])
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_found integer;
BEGIN
    PERFORM FROM memory_event_secrets s
     WHERE s.tenant = p_tenant AND s.batch = ANY (p_epochs) AND s.batch LIKE 'e:%'
       FOR KEY SHARE;
    GET DIAGNOSTICS v_found = ROW_COUNT;
    IF v_found < cardinality(p_epochs) THEN
        RAISE EXCEPTION 'an epoch of this append was destroyed (a forget since it was made)'
            USING ERRCODE = 'MM004';
    END IF;
    RETURN p_tenant;
END $$;
"""

DOWNGRADE = "DROP FUNCTION memory_check_epochs(text, text[]);"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
