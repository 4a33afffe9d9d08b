"""The CLI never overwrites an adapter unless told; bad --out and --lr are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest

import peftplug
from peftplug.cli import main
from peftplug.testing.tiny_models import tiny_bert_classifier


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    model = peftplug.apply(tiny_bert_classifier(), ["lora"], {"lora": {"r": 2}})
    return peftplug.save_adapter(model, tmp_path / "adapter")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["peftplug", "peft"])
def test_export_into_an_existing_adapter_needs_overwrite(
    adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")
    code, err = run(["export", str(adapter), "--out", str(out), "--format", fmt], capsys)
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    assert (out / "adapter_config.json").read_text() == "{}"


def test_export_with_overwrite_replaces_the_adapter(
    adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = peftplug.save_adapter(
        peftplug.apply(tiny_bert_classifier(), ["lora"], {"lora": {"r": 4}}), tmp_path / "out"
    )
    (out / "notes.txt").write_text("mine")
    code, _ = run(["export", str(adapter), "--out", str(out), "--overwrite"], capsys)
    assert code == 0
    assert peftplug.serialization.read_adapter(out)[0]["methods"][0]["config"]["r"] == 2
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lr", "0"], "--lr must be a positive learning rate"),
        (["--lr", "-1"], "--lr must be a positive learning rate"),
    ],
)
def test_train_refuses_a_bad_learning_rate_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, err = run(["train", "--method", "lora", "--out", str(tmp_path / "new"), *extra], capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_train_refuses_an_existing_adapter_or_a_file_before_training(
    adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run(["train", "--method", "lora", "--out", str(adapter)], capsys)
    assert code == 2 and "--overwrite" in err
    file = tmp_path / "file"
    file.write_text("x")
    code, err = run(["train", "--method", "lora", "--out", str(file)], capsys)
    assert code == 2 and "is a file" in err and file.read_text() == "x"


def test_ctrl_c_exits_130_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import peftplug.commands.train as train

    def interrupted(arguments: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_train", interrupted)
    code, err = run(["train", "--method", "lora", "--out", "unused"], capsys)
    assert code == 130
    assert err.strip() == "peftplug train: interrupted"


def test_compare_exits_non_zero_when_every_row_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import peftplug_compare.plan as plan
    import peftplug_compare.runner as runner

    failed = [{"label": label, "status": "failed", "error": "boom"} for label in ("a", "b")]
    monkeypatch.setattr(plan, "plan_rows", lambda *args, **kwargs: [])
    monkeypatch.setattr(runner, "run_compare", lambda *args, **kwargs: type("Run", (), {"rows": failed})())
    code, err = run(["compare", "--out", str(tmp_path)], capsys)
    assert code == 1
    assert "every row failed" in err and "boom" in err and "Traceback" not in err
