"""The mutation corpus stays in step with the plugins' source (the harness itself: mutation/run.py)."""

from __future__ import annotations

import pytest

from mutation.mutants import CORPUS, Mutant
from mutation.run import package_dir

MUTANTS = [mutant for mutants in CORPUS.values() for mutant in mutants]


def test_each_plugin_has_at_least_eight_distinct_bugs() -> None:
    assert {"lora", "adapter", "prompt"} <= set(CORPUS)
    for plugin, mutants in CORPUS.items():
        assert len({m.bug for m in mutants}) == len(mutants) >= 8, plugin


@pytest.mark.parametrize("mutant", MUTANTS, ids=[f"{m.plugin}:{m.bug}" for m in MUTANTS])
def test_each_mutant_changes_exactly_one_place(mutant: Mutant) -> None:
    text = (package_dir(mutant.plugin) / mutant.path).read_text()
    assert text.count(mutant.old) == 1
    assert mutant.new != mutant.old
