"""Training's progress bar: on by default, off when TQDM_DISABLE is set, even after import."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from peftplug.workload.training import ProgressBar


@pytest.mark.parametrize(("value", "disabled"), [(None, False), ("1", True), ("0", False)])
def test_bars_follow_tqdm_disable_set_after_tqdm_was_imported(
    monkeypatch: pytest.MonkeyPatch, value: str | None, disabled: bool
) -> None:
    if value is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", value)
    progress = ProgressBar("row")
    state = SimpleNamespace(max_steps=3, global_step=0)
    progress.on_train_begin(None, state, None)
    assert progress.bar is not None and progress.bar.disable is disabled
    progress.on_train_end(None, state, None)
