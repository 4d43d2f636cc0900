"""Plot recall against k per system from a benchmarks/locomo.py result.

    python benchmarks/locomo_plot.py RESULT.json benchmarks/locomo_recall.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

KS = (5, 10, 25, 50)
# Published: LoCoMo paper (Maharana et al., ACL 2024), DRAGON retriever over turns.
PUBLISHED = {"LoCoMo paper, DRAGON (published)": (0.588, 0.675, 0.799, 0.848)}


def main() -> None:
    result = json.loads(Path(sys.argv[1]).read_text())
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, s in result["systems"].items():
        ax.plot(KS, [s[f"recall@{k}"] for k in KS], marker="o",
                linewidth=2.5 if name == "default" else 1.5, label=name)
    for name, values in PUBLISHED.items():
        ax.plot(KS, values, linestyle="--", color="grey", marker="x", label=name)
    ax.set_xscale("log")
    ax.set_xticks(KS, [str(k) for k in KS])
    ax.minorticks_off()
    ax.set_xlabel("k (turns retrieved)")
    ax.set_ylabel("recall@k of evidence turns")
    ax.set_ylim(0.2, 1.0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"LoCoMo, {result.get('conversations', '?')} conversations, "
                 f"{result['questions']} questions")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(sys.argv[2])


if __name__ == "__main__":
    main()
