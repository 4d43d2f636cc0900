"""What a forget leaves on disk, and what the physical erasure step costs. A script, not a
timed test.

    .venv/bin/python benchmarks/erasure.py [--actors 1000] [--appends 10] [--out r.json]

Builds a scratch database on its own embedded server (a temporary ``MEMORY_HOME``):
``--actors`` actors, each appending ``--appends`` batches of two sealed messages that carry
a marker unique to the actor (several sessions each, so summaries are written), projected
(chunks with the model-free ``HashEmbedder``, words, summaries) and ANALYZEd. It then
forgets one actor with ``erase=False`` and measures, on the owner's connection:

- the rewrite of the key tables (``VACUUM (FULL)``, memory/erasure.py) and the vacuum of
  the derived tables, each timed, while a writer thread appends single events for another
  actor: the appends' latency before and during the erasure (the rewrite holds an ACCESS
  EXCLUSIVE lock on each key table, which appends wait for);
- a raw-byte scan of the database's files (``base/<oid>/``, after a CHECKPOINT) for the
  forgotten actor's marker (in clear) and key material (wrapped key, epoch secrets),
  before and after the erasure, per relation (``pg_filenode_relation``);
- the same scan after ``erase(rewrite_derived=True)`` (the derived tables rewritten);
- the same scan of ``pg_wal/``, after the erasure, after ``erasure.flush_wal``
  (checkpoints and WAL switches), and after one more with ``wal_recycle = off`` (set on
  this scratch server only);
- the marker in ``pg_statistic`` (as text) and in any table (rows as text).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import harness
import result_file
from latency import percentile
from machine_info import commit

import memory
from memory import erasure, message
from memory.embedding import HashEmbedder
from memory.pg import embedded


def marker(i: int) -> str:
    return f"zqmark{i:05d}x{uuid.uuid5(uuid.NAMESPACE_DNS, str(i)).hex[:6]}"


def populate(store: memory.Store, actors: int, appends: int) -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    for a in range(actors):
        mark = marker(a)
        for k in range(appends):
            t = t0 + timedelta(minutes=a * appends + k)
            store.append(f"a{a}-s{k % 3}", [
                message("user", f"My locker code is {mark}, do not tell anyone ({k})",
                        occurred_at=t),
                message("assistant", f"Noted, {mark} stays between us ({k}).",
                        occurred_at=t + timedelta(seconds=5)),
            ], actor=f"actor{a}")
    store.append("late", message("user", "A much later event.",
                                 occurred_at=t0 + timedelta(days=400)), actor="late")


def key_material(conn: sa.Connection, actor: str) -> list[bytes]:
    keys = [r[0] for r in conn.exec_driver_sql(
        "SELECT key_id FROM memory_keys WHERE actor_id = %s", (actor,))]
    out = [bytes(r[0]) for r in conn.exec_driver_sql(
        "SELECT wrapped FROM memory_keys WHERE actor_id = %s", (actor,))]
    for (blob,) in conn.exec_driver_sql(
            "SELECT secrets FROM memory_event_secrets WHERE key_id = ANY(%s)", (keys,)):
        blob = bytes(blob)
        out += [blob[i:i + 32] for i in range(0, len(blob), 32) if any(blob[i:i + 32])]
    return out


def scan(folder: Path, needles: dict[str, bytes]) -> Counter[tuple[str, str]]:
    """(needle kind, file name) -> occurrences."""
    hits: Counter[tuple[str, str]] = Counter()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for kind, needle in needles.items():
            n = data.count(needle)
            if n:
                hits[(kind, path.name)] += n
    return hits


def by_relation(conn: sa.Connection, hits: Counter[tuple[str, str]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for (kind, name), n in hits.items():
        node = name.split("_")[0].split(".")[0]
        rel = conn.exec_driver_sql(
            "SELECT coalesce(pg_filenode_relation(0, %s::oid)::text, %s)",
            (node, name)).scalar_one() if node.isdigit() else name
        out[f"{kind} in {rel}"] += n
    return dict(sorted(out.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--actors", type=int, default=1000)
    ap.add_argument("--appends", type=int, default=10)
    ap.add_argument("--out")
    args = ap.parse_args()
    # Its own server: the scan reads the server's files, and wal_recycle is changed on it.
    with (harness.server(prefix="memory-erasure-", isolate_home=True) as srv,
          harness.scratch_database(srv.url, "erasure_bench") as dburl):
        assert srv.home is not None
        result = measure(args, srv.home, dburl)
    result_file.write(result, args.out, echo=True)
    return 0


def measure(args: argparse.Namespace, home: Path, dburl: str) -> dict[str, Any]:
    """Populate, forget, erase and scan the database ``dburl`` of the server in ``home``."""
    owner = sa.create_engine(dburl, isolation_level="AUTOCOMMIT")
    result: dict[str, Any] = {"actors": args.actors, "appends": args.appends,
                              "date": datetime.now(UTC).isoformat(timespec="seconds"),
                              "commit": commit()}
    try:
        with memory.Store.open(dburl) as store:
            t = time.perf_counter()
            populate(store, args.actors, args.appends)
            result["populate_s"] = round(time.perf_counter() - t, 1)
            store.project(embedder=HashEmbedder(64))
            victim, mark = "actor7", marker(7)
            with owner.connect() as conn:
                conn.exec_driver_sql("ANALYZE")
                result["sizes"] = {t: conn.exec_driver_sql(
                    "SELECT pg_size_pretty(pg_total_relation_size(%s))", (t,)).scalar_one()
                    for t in erasure.KEY_TABLES + erasure.DERIVED_TABLES
                    if conn.exec_driver_sql("SELECT to_regclass(%s)", (t,)).scalar()}
                result["rows"] = {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}"
                                                          ).scalar_one()
                                  for t in ("memory_events", *erasure.KEY_TABLES[:2],
                                            *erasure.DERIVED_TABLES[:3])}
                keys = key_material(conn, victim)
                oid = conn.exec_driver_sql("SELECT oid FROM pg_database WHERE datname = "
                                           "current_database()").scalar_one()
            needles = {"marker": mark.encode()} | {
                f"key{i}": k for i, k in enumerate(keys)}
            base = embedded.data_dir(home) / "base" / str(oid)
            wal = embedded.data_dir(home) / "pg_wal"

            def disk(label: str) -> None:
                with owner.connect() as conn:
                    conn.exec_driver_sql("CHECKPOINT")
                    hits = scan(base, needles)
                    result[f"base_{label}"] = by_relation(conn, hits)
                result[f"wal_{label}"] = {
                    k: n for k, n in Counter(
                        ("key" if kind.startswith("key") else kind)
                        for (kind, _f), c in scan(wal, needles).items()
                        for _ in range(c)).items()}

            disk("before_forget")
            forgotten = store.forget(actor=victim, erase=False)
            result["forget_derived_rows"] = forgotten.derived_rows
            disk("after_forget_no_erase")

            # Appends of another actor during the erasure.
            lat: list[tuple[float, float]] = []
            stop = threading.Event()

            def writer() -> None:
                while not stop.is_set():
                    s = time.perf_counter()
                    store.append("w", message("user", "tick"), actor="writer")
                    lat.append((s, time.perf_counter() - s))

            th = threading.Thread(target=writer)
            th.start()
            time.sleep(1.0)
            with owner.connect() as conn:
                conn.exec_driver_sql("SET statement_timeout = 0")
                t0 = time.perf_counter()
                conn.exec_driver_sql("VACUUM (FULL) " + ", ".join(erasure.KEY_TABLES))
                t1 = time.perf_counter()
                conn.exec_driver_sql("VACUUM (INDEX_CLEANUP ON) "
                                     + ", ".join(erasure.DERIVED_TABLES))
                t2 = time.perf_counter()
            time.sleep(0.5)
            full = erasure.erase(owner)  # marks the request, measures the whole step
            time.sleep(0.5)
            stop.set()
            th.join()
            before = [d for s, d in lat if s < t0]
            during_full = [d for s, d in lat if t0 <= s < t1]
            during_vac = [d for s, d in lat if t1 <= s < t2]
            result["vacuum_full_key_tables_ms"] = round((t1 - t0) * 1000, 1)
            result["vacuum_derived_ms"] = round((t2 - t1) * 1000, 1)
            result["erase_step_s"] = round(full.seconds, 3)
            result["erase_done"] = full.done

            def summary(xs: list[float]) -> dict[str, float]:
                ms = [x * 1000 for x in xs]
                return {"n": len(ms), "p50_ms": percentile(ms, 50, digits=2),
                        "max_ms": round(max(ms), 2)} if ms else {"n": 0}

            result["append_latency"] = {"before": summary(before),
                                        "during_vacuum_full": summary(during_full),
                                        "during_vacuum_derived": summary(during_vac)}
            disk("after_erase")
            t = time.perf_counter()
            rewrite = erasure.erase(owner, rewrite_derived=True)
            result["erase_rewrite_derived_s"] = round(time.perf_counter() - t, 3)
            assert rewrite.done, rewrite
            disk("after_rewrite_derived")
            erasure.flush_wal(owner)
            disk("after_flush_wal")
            with owner.connect() as conn:  # removed, not recycled: the files are unlinked
                conn.exec_driver_sql("ALTER SYSTEM SET wal_recycle = off")
                conn.exec_driver_sql("SELECT pg_reload_conf()")
            time.sleep(0.5)
            erasure.flush_wal(owner)
            disk("after_flush_wal_recycle_off")
            with owner.connect() as conn:
                stats = "\n".join(r[0] or "" for r in conn.exec_driver_sql(
                    "SELECT concat_ws(' ', stavalues1::text, stavalues2::text, "
                    "stavalues3::text, stavalues4::text, stavalues5::text) "
                    "FROM pg_statistic"))
                result["marker_in_pg_statistic"] = mark in stats
                tables = [r[0] for r in conn.exec_driver_sql(
                    "SELECT quote_ident(table_name) FROM information_schema.tables WHERE "
                    "table_schema = current_schema() AND table_type = 'BASE TABLE'")]
                result["marker_in_tables"] = [t for t in tables if conn.exec_driver_sql(
                    f"SELECT count(*) FROM {t} x WHERE x::text LIKE %s",
                    (f"%{mark}%",)).scalar_one()]
                result["wal_settings"] = {k: conn.exec_driver_sql(f"SHOW {k}").scalar_one()
                                          for k in ("checkpoint_timeout", "max_wal_size",
                                                    "min_wal_size", "wal_keep_size",
                                                    "archive_mode", "wal_recycle")}
    finally:
        owner.dispose()
    return result


if __name__ == "__main__":
    raise SystemExit(main())
