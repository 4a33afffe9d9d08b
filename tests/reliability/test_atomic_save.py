"""A save is committed as a whole: killed at any step, it leaves the old adapter or the new one."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest
import torch

import peftplug
from peftplug import atomic
from peftplug.errors import AdapterSaveError
from peftplug.serialization import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from peftplug.testing.tiny_models import tiny_bert_classifier

KILLED, FINISHED = 41, 42  # child exit codes
ADAPTER_FILES = {ADAPTER_CONFIG, ADAPTER_WEIGHTS}
SAVED_FILES = ADAPTER_FILES | {"README.md"}  # the model card is written after the commit


def _adapter(seed: int) -> torch.nn.Module:
    """A LoRA model whose trainable values depend on ``seed`` (so two adapters differ)."""
    model = peftplug.apply(tiny_bert_classifier(), ["lora"], {"lora": {"r": 2}})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


def _values(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _loaded_values(directory: Path) -> dict[str, torch.Tensor]:
    return _values(peftplug.load_adapter(tiny_bert_classifier(), directory))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _save_killed_at(model: torch.nn.Module, directory: Path, step: str | None) -> None:
    """Save in a child process that dies (``os._exit``: no cleanup runs) just before ``step``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns to pytest
        code = FINISHED
        try:
            atomic.step_hook = lambda name: os._exit(KILLED) if name == step else None
            peftplug.save_adapter(model, directory)
        except BaseException:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == (FINISHED if step is None else KILLED)


def test_the_protocol_reports_every_step_in_order(tmp_path: Path, monkeypatch) -> None:
    seen: list[str] = []
    monkeypatch.setattr(atomic, "step_hook", seen.append)
    peftplug.save_adapter(_adapter(1), tmp_path)
    assert tuple(seen) == atomic.COMMIT_STEPS


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a kill is simulated with fork and _exit")
@pytest.mark.parametrize("previous", [True, False], ids=["over-an-adapter", "into-a-new-dir"])
@pytest.mark.parametrize("step", [*atomic.COMMIT_STEPS, None], ids=[*atomic.COMMIT_STEPS, "none"])
def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_adapter(
    tmp_path: Path, step: str | None, previous: bool
) -> None:
    directory = tmp_path / "adapter"
    directory.mkdir()
    (directory / "README.md").write_text("the user's own file")
    old, new = _adapter(1), _adapter(2)
    if previous:
        peftplug.save_adapter(old, directory)
    _save_killed_at(new, directory, step)
    committed = step is None or atomic.COMMIT_STEPS.index(step) > atomic.COMMIT_STEPS.index(
        "commit-record"
    )
    if committed:
        assert _same(_loaded_values(directory), _values(new))
    elif previous:
        assert _same(_loaded_values(directory), _values(old))
    else:
        with pytest.raises(peftplug.AdapterLoadError, match="no adapter in"):
            peftplug.load_adapter(tiny_bert_classifier(), directory)
    expected = (ADAPTER_FILES if committed or previous else set()) | {"README.md"}
    assert {p.name for p in directory.iterdir()} == expected  # the load removed the leftovers


def test_a_torn_staged_file_is_never_installed(tmp_path: Path) -> None:
    """A save of identical content killed mid-write stages a torn file under the committed digest."""
    old = _adapter(1)
    peftplug.save_adapter(old, tmp_path)
    data = (tmp_path / ADAPTER_WEIGHTS).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    (tmp_path / atomic.staged_name(ADAPTER_WEIGHTS, digest)).write_bytes(data[: len(data) // 2])
    assert _same(_loaded_values(tmp_path), _values(old))
    assert {p.name for p in tmp_path.iterdir()} == SAVED_FILES


@pytest.mark.parametrize("cleaned_by", ["save", "load"])
def test_leftovers_of_this_adapter_are_removed_and_nothing_else(
    tmp_path: Path, cleaned_by: str
) -> None:
    peftplug.save_adapter(_adapter(1), tmp_path)
    leftovers = [
        f".{ADAPTER_WEIGHTS}.k3j2h1.tmp",  # what atomic_write_files left when killed
        f".{ADAPTER_CONFIG}.a8f0c2.tmp",
        atomic.staged_name(ADAPTER_WEIGHTS, "0" * 64),
        atomic.staged_name(ADAPTER_CONFIG, "0" * 64),
    ]
    unrelated = ["notes.tmp", ".model.safetensors.x.tmp", f"{ADAPTER_WEIGHTS}.bak", ".cache"]
    for name in leftovers + unrelated:
        (tmp_path / name).write_bytes(b"partial")
    if cleaned_by == "save":
        peftplug.save_adapter(_adapter(2), tmp_path)
    else:
        _loaded_values(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == SAVED_FILES | set(unrelated)


def test_saving_to_a_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    target = tmp_path / "adapter"
    target.write_text("not a directory")
    with pytest.raises(AdapterSaveError, match=f"{target}: it is a file.*pass a directory path"):
        peftplug.save_adapter(_adapter(1), target)
    assert target.read_text() == "not a directory"


@pytest.mark.parametrize("failing_fsync", [1, 2, 3, 4, 5])
def test_a_full_disk_names_the_problem_and_keeps_a_complete_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing_fsync: int
) -> None:
    """fsyncs 1-3 come before the commit (the old adapter stays), 4-5 after it (the new one)."""
    old, new = _adapter(1), _adapter(2)
    peftplug.save_adapter(old, tmp_path)
    real_fsync, calls = os.fsync, []

    def fsync(descriptor: int) -> None:
        calls.append(descriptor)
        if len(calls) == failing_fsync:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(AdapterSaveError, match=f"cannot save the adapter to {tmp_path}: No space"):
        peftplug.save_adapter(new, tmp_path)
    monkeypatch.undo()
    survivor = old if failing_fsync <= 3 else new
    assert _same(_loaded_values(tmp_path), _values(survivor))
    assert {p.name for p in tmp_path.iterdir()} == SAVED_FILES


@pytest.mark.skipif(atomic.fcntl is None, reason="no flock on this platform")
def test_a_load_waits_for_a_save_in_progress_instead_of_removing_its_files(tmp_path: Path) -> None:
    peftplug.save_adapter(_adapter(1), tmp_path)
    in_flight = tmp_path / atomic.staged_name(ADAPTER_WEIGHTS, "1" * 64)
    results: list[object] = []
    with atomic.directory_lock(tmp_path):  # as save_adapter holds it
        in_flight.write_bytes(b"being written")
        loader = threading.Thread(target=lambda: results.append(_loaded_values(tmp_path)))
        loader.start()
        loader.join(timeout=0.5)
        assert loader.is_alive() and in_flight.exists()
    loader.join()
    assert results and not in_flight.exists()
