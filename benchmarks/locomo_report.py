"""Markdown tables for benchmarks/RESULTS.md from a benchmarks/locomo.py run.

    python benchmarks/locomo_report.py RESULT.json PER_QUESTION.jsonl --data FILE
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from locomo_data import CATEGORIES, load

KEYS = ("recall@5", "recall@10", "recall@25", "recall@50", "session_recall_any@5", "mrr",
        "context_recall@1000", "context_recall@2000")
_STOP = ("a an the and or of to in on at for with is are was were be been did do does what "
           "when where who whom which why how would could should has have had her his their "
           "it its this that these those about from by as into like likely i you he she they "
           "we me my your our them him")
STOP = set(_STOP.split())


def words(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOP}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("result")
    ap.add_argument("per_question")
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    r = json.loads(Path(a.result).read_text())
    print("| system | " + " | ".join(KEYS) + " | p50 ms | p95 ms |")
    print("|---" * (len(KEYS) + 3) + "|")
    for name, s in r["systems"].items():
        print(f"| {name} | " + " | ".join(f"{s[k]:.3f}" for k in KEYS)
              + f" | {s['query_ms_p50']:.1f} | {s['query_ms_p95']:.1f} |")
    print()
    keys = ("recall@5", "recall@10", "recall@25", "recall@50", "session_recall_any@5", "mrr",
            "context_recall@2000")
    for name in ("default", "hybrid", "fulltext", "vector", "bm25"):
        s = r["systems"][name]
        print(f"\n`{name}` by category\n")
        print("| category | questions | " + " | ".join(keys) + " |")
        print("|---" * (len(keys) + 2) + "|")
        for cat, v in s["by_category"].items():
            print(f"| {cat} | {v['questions']} | " + " | ".join(f"{v[k]:.3f}" for k in keys)
                  + " |")

    turns = {c.sample_id: {t.dia_id: t for t in c.turns} for c in load(a.data)}
    groups: dict[str, list[str]] = defaultdict(list)
    total = 0
    for line in Path(a.per_question).read_text().splitlines():
        q = json.loads(line)
        d = q["systems"]["default"]
        if d["recall@10"] >= 1.0:
            continue
        total += 1
        ev = q["evidence"]
        found10 = set(d["top10"])
        missing = [e for e in ev if e not in found10]
        qw = words(q["question"])
        overlap = [bool(qw & words(turns[q["conversation"]][e].content)) for e in missing]
        cat = CATEGORIES[q["category"]]
        if len(ev) > 1 and len(missing) < len(ev):
            why = "multi-evidence: some turns found, others (other sessions) not in the top 10"
        elif not any(overlap):
            why = "no content word shared with the question (needs inference or world knowledge)"
        elif "[image:" in " ".join(turns[q["conversation"]][e].content for e in missing):
            why = "the evidence is (partly) in an image caption"
        else:
            why = "shares words but outranked by similar turns (the same topic comes up often)"
        groups[why].append(f"{cat}: {q['question']}")
    print(f"\nQuestions with default recall@10 < 1: {total}\n")
    print("| why (heuristic) | questions | by category |")
    print("|---|---|---|")
    for why, qs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        cats: dict[str, int] = defaultdict(int)
        for x in qs:
            cats[x.split(":", 1)[0]] += 1
        print(f"| {why} | {len(qs)} | "
              + ", ".join(f"{c} {n}" for c, n in sorted(cats.items(), key=lambda kv: -kv[1]))
              + " |")


if __name__ == "__main__":
    main()
