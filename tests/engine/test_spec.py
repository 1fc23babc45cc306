from __future__ import annotations

import pydantic
import pytest

from engine.errors import SpecError
from engine.spec.recipes import lab_recipe
from engine.spec.schema import load_spec, parse_spec


def good(**over):
    d = lab_recipe("/nonexistent/model", "/nonexistent/data.jsonl")
    d.update(over)
    return d


def paths_of(e: SpecError) -> list[str]:
    return [p for p, _ in e.problems]


def test_lab_recipe_is_a_valid_spec():
    s = parse_spec(good())
    assert [p.type for p in s.passes] == ["LoRA", "ModelBuilder", "ExtractAdapters"]
    assert s.model.trust_remote_code is False
    assert s.version == 1


def test_spec_is_frozen():
    s = parse_spec(good())
    with pytest.raises(pydantic.ValidationError):
        s.name = "other"  # type: ignore[misc]


def test_unknown_field_is_refused_with_its_path():
    d = good()
    d["passes"][1]["parameters"] = {"precision": "int4"}  # typo of 'params'
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert "passes.1.parameters" in paths_of(e.value)
    assert "passes.1.parameters" in str(e.value)


def test_missing_pass_type_names_the_field():
    d = good()
    del d["passes"][0]["type"]
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert "passes.0.type" in paths_of(e.value)


def test_eval_split_out_of_range():
    d = good()
    d["dataset"]["eval_split"] = 1.5
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert "dataset.eval_split" in paths_of(e.value)


def test_dataset_needs_exactly_one_source_and_a_template():
    d = good()
    d["dataset"]["hf_name"] = "someone/travel"
    with pytest.raises(SpecError, match="exactly one of 'path'"):
        parse_spec(d)
    d = good()
    del d["dataset"]["text_template"]
    with pytest.raises(SpecError, match="text_template"):
        parse_spec(d)


def test_duplicate_pass_names_and_search_without_settings():
    d = good()
    d["passes"].append({"type": "ExtractAdapters"})
    with pytest.raises(SpecError, match="unique"):
        parse_spec(d)
    d = good()
    d["passes"][1]["search"] = {"int4_block_size": [16, 32]}
    with pytest.raises(SpecError, match="search"):
        parse_spec(d)
    d["search"] = {"sampler": "random", "max_samples": 2}
    with pytest.raises(SpecError, match="needs an evaluator"):  # issue 12: Olive refuses a search without one
        parse_spec(d)
    d["evaluation"] = {"enabled": True, "metrics": [{"name": "perplexity"}]}
    assert parse_spec(d).passes[1].search == {"int4_block_size": [16, 32]}


def test_param_both_fixed_and_searchable_is_refused():
    d = good(search={"sampler": "sequential"})
    d["passes"][1]["search"] = {"precision": ["int4", "fp32"]}
    with pytest.raises(SpecError, match="both fixed and searchable"):
        parse_spec(d)


def test_gpu_target_needs_gpus():
    d = good(target={"device": "gpu", "execution_provider": "CUDAExecutionProvider"})
    with pytest.raises(SpecError, match="resources.gpus is 0"):
        parse_spec(d)
    d = good(target={"device": "cpu", "execution_provider": "CUDAExecutionProvider"})
    with pytest.raises(SpecError) as e:
        parse_spec(d)
    assert "target" in paths_of(e.value)


def test_yaml_file_errors_name_the_file_and_line(tmp_path):
    p = tmp_path / "spec.yaml"
    p.write_text("name: x\nmodel: {name: m\npasses: []\n")
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert str(p) in str(e.value) and "line" in str(e.value)
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "missing.yaml")


def test_future_version_is_refused():
    with pytest.raises(SpecError) as e:
        parse_spec(good(version=2))
    assert "version" in paths_of(e.value)


def test_every_ready_made_recipe_passes_the_checks_a_submit_runs(demo):
    """Every preset (on the CPU and on a GPU) and the real demo's recipes (the CPU ones and their GPU twins) pass
    engine.olive.validate on this CPU machine: a pass parameter misspelt in a recipe (AutoAWQ's ``q_group_size``
    written ``group_size``) is caught here, not by a user's refused run on a GPU."""
    from engine.olive import validate
    from engine.spec import recipes

    model, data = demo["model"], demo["dataset"]
    found = {}
    for key, (_, build) in recipes.PRESETS.items():
        for device in ("cpu", "gpu"):
            r = build(device)
            r["model"] = {**r["model"], "name": model}
            r["dataset"] = {**r["dataset"], "path": data}
            found[f"preset {key} ({device})"] = r
    for r in recipes.real_demo_recipes(model, data):
        found[f"real demo: {r['name']}"] = r
    for name, r in recipes.real_demo_gpu_recipes(model, data).items():
        found[f"real demo on a GPU: {name}"] = r
    problems = {}
    for name, r in found.items():
        try:
            validate.refuse(parse_spec(r))
        except SpecError as e:
            problems[name] = str(e)
    assert not problems, problems
