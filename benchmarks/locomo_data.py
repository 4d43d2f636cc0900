"""The LoCoMo data file, read for benchmarks/locomo.py and benchmarks/locomo_report.py.

LoCoMo (Maharana et al., ACL 2024; CC BY-NC 4.0) is read from where it lies, never copied
into the repository. A turn's id is its dialogue id (``D<session>:<turn>``); a question's
evidence is normalised against the turns that exist (joined ids split, leading zeros
dropped, unreadable or unknown ids left out), and a question left without evidence is
excluded and counted. The metrics themselves are the library's
(``memory.retrieval.evaluation``). Pure Python: no database, no model; checked on
synthetic data by ``pytest benchmarks/test_locomo_data.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

# Official ids, per task_eval/evaluation.py in snap-research/locomo.
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}

_DIA = re.compile(r"^D:?(\d+):(\d+)$")


def normalise_dia_id(raw: str) -> str | None:
    """``'D30:05'`` -> ``'D30:5'``, ``'D:11:26'`` -> ``'D11:26'``; None if unreadable."""
    m = _DIA.match(raw.strip())
    if not m:
        return None
    return f"D{int(m.group(1))}:{int(m.group(2))}"


def normalise_evidence(evidence: Iterable[str], known: set[str] | None = None) -> list[str]:
    """Split joined strings on ``;`` and whitespace, strip leading zeros, drop unreadable
    ids and (when ``known`` is given) ids of turns that do not exist; keep the first
    occurrence of each."""
    out: list[str] = []
    for item in evidence:
        for part in re.split(r"[;\s]+", str(item)):
            if not part:
                continue
            dia = normalise_dia_id(part)
            if dia is None or (known is not None and dia not in known):
                continue
            if dia not in out:
                out.append(dia)
    return out


def session_of(dia_id: str) -> int:
    return int(dia_id[1:].split(":", 1)[0])


@dataclass
class Turn:
    dia_id: str
    session: int
    index: int  # position within the session, 0-based
    speaker: str
    text: str
    caption: str | None
    date: str  # the session's date string, as LoCoMo gives it

    @property
    def content(self) -> str:
        """The message text as ingested: the caption of a shared image kept with the turn."""
        if self.caption:
            return f"{self.text} [image: {self.caption}]"
        return self.text


@dataclass
class Question:
    conv: str
    index: int
    question: str
    category: int
    evidence: list[str]
    answer: str = ""


@dataclass
class Conversation:
    sample_id: str
    speakers: tuple[str, str]
    turns: list[Turn]
    session_dates: dict[int, str]
    questions: list[Question] = field(default_factory=list)
    excluded: int = 0


def load(path: str | Path) -> list[Conversation]:
    """Read the LoCoMo file; evidence normalised against the turns that exist."""
    data = json.loads(Path(path).read_text())
    convs: list[Conversation] = []
    for sample in data:
        c = sample["conversation"]
        sessions = sorted(int(k.split("_")[1]) for k in c
                          if re.fullmatch(r"session_\d+", k) and isinstance(c[k], list))
        turns: list[Turn] = []
        dates: dict[int, str] = {}
        for s in sessions:
            dates[s] = c.get(f"session_{s}_date_time", "")
            for i, t in enumerate(c[f"session_{s}"]):
                dia = normalise_dia_id(t["dia_id"]) or f"D{s}:{i + 1}"
                turns.append(Turn(dia, s, i, t["speaker"], t.get("text", ""),
                                  t.get("blip_caption"), dates[s]))
        conv = Conversation(sample["sample_id"], (c["speaker_a"], c["speaker_b"]), turns, dates)
        known = {t.dia_id for t in turns}
        for qi, qa in enumerate(sample["qa"]):
            ev = normalise_evidence(qa.get("evidence", []), known)
            if not ev:
                conv.excluded += 1
                continue
            answer = qa.get("answer", qa.get("adversarial_answer", ""))
            conv.questions.append(Question(conv.sample_id, qi, qa["question"],
                                           int(qa["category"]), ev, str(answer)))
        convs.append(conv)
    return convs
