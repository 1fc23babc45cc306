"""Importing Olive configs of the older (Phi-3 cookbook) and current shapes: never a crash, every meaningful field
mapped with a note, the rest dropped with a note naming it; code and trust_remote_code only with an explicit opt-in;
the imported draft is checked as a submit checks it."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import SpecError
from engine.olive import catalog, importer

HERE = Path(__file__).resolve().parent.parent / "inputs" / "olive"


@pytest.fixture(scope="module")
def passes():
    return catalog.load()["passes"]


def test_older_cookbook_config_is_mapped_with_notes(passes):
    text = (HERE / "phi3_cookbook_old.json").read_text()
    with pytest.raises(SpecError, match="trust_remote_code"):  # not copied silently
        importer.import_text(text, passes)
    d, notes = importer.import_text(text, passes, allow_code=True)
    all_notes = "\n".join(notes)
    assert d["model"] == {"name": "microsoft/Phi-3-mini-4k-instruct", "trust_remote_code": True, "revision": None}
    assert d["target"]["device"] == "gpu" and d["target"]["execution_provider"] == "CUDAExecutionProvider"
    assert d["resources"]["gpus"] == 1 and d["target"]["precision"] == "int4"
    assert d["dataset"]["path"] == "dataset/dataset-classification.json"
    assert d["dataset"]["text_template"].startswith("### Text: {phrase}") and d["dataset"]["eval_split"] == 0.3
    assert d["dataset"]["max_seq_len"] == 1024
    lora = d["passes"][0]["params"]
    assert lora["r"] == 32 and lora["alpha"] == 64 and "lora_r" not in lora and "double_quant" not in lora
    assert lora["training_args"]["eval_strategy"] == "steps" and "made_up_arg" not in lora["training_args"]
    assert [p["type"] for p in d["passes"]] == ["LoRA", "MergeAdapterWeights", "ModelBuilder"]
    for expected in ("lora_r → r", "lora_alpha → alpha", "evaluation_strategy → eval_strategy", "double_quant",
                     "made_up_arg", "accelerators ['gpu']", "execution_providers", "WARNING",
                     "hf_config.model_name", "eval_dataset_size 0.3 → dataset.eval_split", "corpus_strategy"):
        assert expected in all_notes, expected
    # the draft's only remaining problems name their field: the dataset file is not here
    assert [n for n in notes if n.startswith("to fix")] == [
        n for n in notes if n.startswith("to fix: dataset.path")
    ]


def test_current_config_round_trips_without_fixes(passes):
    d, notes = importer.import_text((HERE / "current.yaml").read_text(), passes)
    assert d["passes"][0]["params"] == {"r": 16, "alpha": 32, "training_args": {"max_steps": 20}}
    assert d["dataset"]["path"] == "data/train.jsonl" and d["dataset"]["max_seq_len"] == 256
    assert d["target"]["execution_provider"] == "CUDAExecutionProvider"
    assert not [n for n in notes if n.startswith("to fill in")]


def test_code_and_remote_stores_are_refused_unless_opted_in(passes):
    text = (HERE / "remote_and_code.yaml").read_text()
    with pytest.raises(SpecError) as e:
        importer.import_text(text, passes)
    msg = str(e.value)
    assert "passes.conv.user_script" in msg and "data_configs.train" in msg
    d, notes = importer.import_text(text, passes, allow_code=True)
    all_notes = "\n".join(notes)
    assert d["passes"][0]["params"] == {"user_script": "loader.py"} and d["allow_user_code"] is True
    assert "AzureML (remote) dropped" in all_notes and "remote data store" in all_notes
    assert "type2" in all_notes


def test_odd_shapes_never_crash(passes):
    for text in ("passes: {a: 3}", "input_model: 5\npasses: {}", "systems: [1]\npasses: {p: {type: LoRA}}",
                 "engine: {execution_providers: [1]}\npasses: {p: [{}]}", "data_configs: {x: 1}\npasses: {}"):
        importer.import_text(text, passes)


def test_yaml_unclosed_quote_points_at_its_line():
    with pytest.raises(SpecError, match="line 2, column"):
        importer.import_text('passes: {}\ninput_model: {model_path: "abc}\nx: 1\n')
