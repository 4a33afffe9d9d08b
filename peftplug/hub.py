"""Adapters named by a Hugging Face Hub id (``user/repo``), found through huggingface_hub's cache."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from peftplug.errors import AdapterLoadError

REPO_ID = re.compile(r"^[\w][\w.-]*/[\w][\w.-]*$")


def is_repo_id(name: str | Path) -> bool:
    """Whether ``name`` has the form of a Hub repository id, ``user/repo``."""
    return isinstance(name, str) and REPO_ID.match(name) is not None


def snapshot(repo_id: str, files: Sequence[str]) -> Path:
    """The local snapshot of ``repo_id`` holding ``files``: from the cache, else downloaded.

    ``HF_HUB_OFFLINE=1`` (and ``HF_HOME``/``HF_HUB_CACHE``) apply as in huggingface_hub.
    """
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=list(files)))
    except (HfHubHTTPError, OSError, ValueError) as error:
        offline = " (offline)" if huggingface_hub.constants.HF_HUB_OFFLINE else ""
        raise AdapterLoadError(
            f"{repo_id!r} is not a directory, and no Hub repo {repo_id!r} is cached{offline} or "
            f"could be downloaded ({type(error).__name__}: {error}): check the path, or fetch "
            f"the repo once online (hf download {repo_id})"
        ) from None
