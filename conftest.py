"""Test-wide settings: nothing may reach a model hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(items: list) -> None:
    """The slow real-model tests first: under `make test`'s two workers the long ones then run
    side by side, instead of one of them keeping a core busy after the other has finished."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
