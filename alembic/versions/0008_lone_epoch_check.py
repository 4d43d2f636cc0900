"""A lone append sealed under an epoch checks the epoch inside ``memory_append_request``.

Revision ID: 0008
Revises: 0007

Why (benchmarks/RESULTS.md, "Encryption")
-----------------------------------------
Since 0007 a lone sealed append ran ``memory_check_epochs`` and then
``memory_append_request``: two PL/pgSQL calls joined in one statement, with an array
parameter. Measured per call on this machine (one connection, the variants interleaved,
3,000 calls each, while building this migration): against the same sealed append with no
check at all, that statement took ~185 us more (median) and ~90 us more server CPU; the same
check inside ``memory_append_request`` takes ~75 us and ~65 us. (The check's two statements,
a shared advisory lock and a look-up by primary key, cost ~15 us in a loop of one
transaction; the rest, per append, I did not break down.) A lone epoch request (no actor key
id, its batch an epoch's name ``e:...``) now runs them there, first, before the append lock,
as the statement of 0007 did, so nothing changes in what waits for what:

* a forget that destroys the epoch holds its advisory lock exclusively: the append waits
  for it before taking the append lock (so appends of other actors are not held up by a
  forget), then looks the epoch up in a snapshot of its own, finds it gone and fails with
  MM004, having written nothing;
* the append holds the epoch (shared) until commit, so a forget that comes later waits
  for it and then sees its events.

Groups (``memory_append_set``, ``memory_append_group``) are unchanged and still run
``memory_check_epochs`` first (log_sql.APPEND_SET_EPOCHS), once for the whole group. The
function body is 0005's with this one block added.
"""

import importlib.util
from pathlib import Path

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _request_0005() -> str:
    """``memory_append_request`` as 0005 created it (that module's APPEND_REQUEST)."""
    path = Path(__file__).with_name("0005_grouped_append.py")
    spec = importlib.util.spec_from_file_location("memory_migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text: str = module.APPEND_REQUEST
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


BEGIN = "\nBEGIN\n"  # the check goes first, before the append lock
CHECK = """    IF NOT p_grouped AND p_key_id IS NULL AND p_batch LIKE 'e:%' THEN
        -- Sealed under an epoch (0007): hold it until commit, then make sure it exists,
        -- as memory_check_epochs does for a group, and before the append lock as there.
        PERFORM pg_advisory_xact_lock_shared(memory_epoch_lock(p_batch));
        PERFORM FROM memory_event_secrets s
         WHERE s.tenant = p_tenant AND s.batch = p_batch;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'the epoch % was destroyed (a forget since it was made)',
                            p_batch USING ERRCODE = 'MM004';
        END IF;
    END IF;
"""


def upgrade() -> None:
    before = _request_0005()
    assert before.count(BEGIN) == 1, "0005's memory_append_request is not the one expected"
    op.execute(before.replace(BEGIN, BEGIN + CHECK))


def downgrade() -> None:
    op.execute(_request_0005())
