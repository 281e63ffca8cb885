"""`densekit pipeline run`: config errors first, then a tiny pipeline end to end on a slice of
SciFact (tiny random BERT bi-encoder and cross-encoder): every stage runs, a second run skips
every stage and touches no output, a changed reranker section re-runs the reranker and the
stages that read it only, and the servable folder answers /search with its reranker."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from cli_support import run_cli

from densekit.errors import ConfigError, InvalidInputError
from densekit.pipeline.config import STAGES

# The stages of the single-corpus configs below (select is for the targets tests).
CONFIGURED = tuple(s for s in STAGES if s != "select")


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _open(path: Path):
    from densekit.pipeline.runner import open_pipeline
    from densekit.settings import Settings

    return open_pipeline(path, Settings(device="cpu"), progress=False, log=lambda m: None)


# ---- config errors (fast: nothing is trained) ---------------------------------------------


@pytest.fixture()
def beir_with_train(tiny_beir: Path) -> Path:
    shutil.copy(tiny_beir / "qrels" / "test.tsv", tiny_beir / "qrels" / "train.tsv")
    return tiny_beir


def _small_config(tmp_path: Path, data: Path) -> dict:
    return {
        "out": str(tmp_path / "out"),
        "device": "cpu",
        "stages": {
            "biencoder": {"model": "some-org/some-model", "data": {"beir": str(data)}},
            "index": {"data": str(data)},
            "fusion": {"split": "train"},
            "reranker": {"kind": "cross-encoder", "data": {"beir": str(data)}},
            "eval": {"datasets": [str(data)]},
            "serve": {},
        },
    }


def _as_targets(cfg: dict, targets: dict) -> dict:
    """The config with `targets`: the per-target stages lose the fields each target gives."""
    cfg["targets"] = targets
    for stage, key in (("index", "data"), ("fusion", "split"), ("select", "split"), ("eval", "datasets")):
        cfg["stages"].get(stage, {}).pop(key, None)
    return cfg


@pytest.mark.parametrize(
    "change, key, words",
    [
        (lambda c: c["stages"]["reranker"]["train"].update(stepz=3), "stages.reranker.train.stepz", "unknown field"),
        (lambda c: c["stages"].update(rerank={}), "stages.rerank", "unknown stage"),
        (lambda c: c.update(outt="x"), "outt", "unknown field"),
        (lambda c: c["stages"]["fusion"].update(split="test"), "stages.fusion.split", "never on 'test'"),
        (lambda c: c["stages"]["biencoder"].update(output_dir="x"), "stages.biencoder", "set by the pipeline"),
        (lambda c: c["stages"]["index"].update(data="/no/such/folder"), "stages.index.data", "not found"),
        (lambda c: c["stages"]["eval"].update(datasets=[{"name": "{data}", "split": "dev"}]), "stages.eval.datasets.0", "no 'dev' split"),
        (
            lambda c: c["stages"]["index"].update(kind="ivf", search_params={"ef_search": 8}),
            "stages.index.search_params.ef_search",
            "does not apply",
        ),
        (lambda c: c["stages"]["serve"].update(settings={"index_dir": "x"}), "stages.serve.settings", "set by the serve stage"),
        (lambda c: c["stages"].pop("index"), "stages.fusion", "add stages.index"),
        (
            lambda c: c["stages"].update(mine={}) or c["stages"]["biencoder"].update(mining={"enabled": True}),
            "stages.biencoder.mining",
            "leave mining",
        ),
        (lambda c: c["stages"]["reranker"].update(model="./missing-model"), "stages.reranker.model", "model folder not found"),
        (lambda c: c["stages"].update(select={"split": "test"}), "stages.select.split", "never on 'test'"),
        (lambda c: c["stages"].update(select={}), "stages.select.split", "the split of the index dataset"),
        (lambda c: c["stages"].update(select={"split": "train", "weights": [1.5]}), "stages.select.weights", "within [0, 1]"),
        (lambda c: c["stages"].update(select={"split": "train"}) or c["stages"].pop("biencoder"), "stages.select", "add stages.biencoder"),
        (lambda c: c.update(targets={"a": {"data": "{data}"}}), "stages.index.data", "leave it out"),
        (lambda c: _as_targets(c, {"a": {"data": "{data}", "tune": {"split": "test"}}}), "targets.a.tune.split", "never on 'test'"),
        (lambda c: _as_targets(c, {"a": {"data": "{data}", "tune": {"split": "dev"}}}), "targets.a.tune", "no 'dev' split"),
        (lambda c: _as_targets(c, {"a": {"data": "/no/such/folder"}}), "targets.a.data", "not found"),
        (lambda c: _as_targets(c, {"../a": {"data": "{data}"}}), "targets", "plain folder name"),
        (
            lambda c: _as_targets(c, {"a": {"data": "{data}", "tune": {"split": "train"}, "eval_split": "train"}}),
            "targets.a.tune",
            "the split it reports",
        ),
    ],
)
def test_bad_configs_name_the_key_and_the_file(tmp_path, beir_with_train, change, key, words):
    cfg = _small_config(tmp_path, beir_with_train)
    cfg["stages"]["reranker"]["train"] = {}
    change(cfg)
    path = _write(tmp_path / "p.yaml", json.loads(json.dumps(cfg).replace("{data}", str(beir_with_train))))
    with pytest.raises(ConfigError) as err:
        _open(path)
    assert err.value.field.startswith(key), err.value
    assert words in str(err.value) and str(path) in str(err.value)
    assert not (tmp_path / "out").exists()


def test_cli_prints_config_errors_without_a_traceback(tmp_path, beir_with_train, capsys):
    cfg = _small_config(tmp_path, beir_with_train)
    cfg["stages"]["bogus"] = {}
    path = _write(tmp_path / "p.yaml", cfg)
    assert run_cli(["pipeline", "run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "stages.bogus" in err and "unknown stage" in err and "Traceback" not in err
    assert run_cli(["pipeline", "run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    del cfg["stages"]["bogus"]
    _write(path, cfg)
    assert run_cli(["pipeline", "run", "--config", str(path), "--from", "rerank"]) == 2
    assert "unknown stage 'rerank'" in capsys.readouterr().err
    del cfg["stages"]["fusion"]
    _write(path, cfg)
    assert run_cli(["pipeline", "run", "--config", str(path), "--from", "fusion", "--dry-run"]) == 2
    assert "not in the config" in capsys.readouterr().err


def test_pipeline_run_help_documents_its_flags():
    from typer.testing import CliRunner

    from densekit.cli.main import app

    result = CliRunner().invoke(app, ["pipeline", "run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(flag in result.output for flag in ("--config", "--dry-run", "--from"))


def test_dry_run_of_a_fresh_pipeline_runs_every_stage_and_writes_nothing(tmp_path, beir_with_train, capsys):
    path = _write(tmp_path / "p.yaml", _small_config(tmp_path, beir_with_train))
    assert run_cli(["pipeline", "run", "--config", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [["off", "mine"]] + [["off" if s == "select" else "run", s] for s in STAGES[1:]]
    assert "no stamp" in lines[1] and "input biencoder runs" in lines[3]
    assert not (tmp_path / "out").exists()


def test_the_shipped_pipelines_validate(data_dir, tmp_path, monkeypatch):
    from densekit.data import load_pairs
    from densekit.data.folders import resolve_dataset_folder
    from densekit.data.hold_out import hold_out_beir, hold_out_pairs
    from densekit.pipeline.config import load_pipeline_config

    # The held-out splits shared-wise.yaml trains and chooses on, made as its header says,
    # relative to the folder the pipeline runs in.
    monkeypatch.chdir(tmp_path)
    hold_out_beir(data_dir / "scifact", "runs/data/scifact-dev")
    pairs = data_dir / "wikiqa" / "train_pairs.jsonl"
    hold_out_pairs(load_pairs(pairs), pairs, "runs/data/wikiqa-dev")
    root = Path(__file__).resolve().parent.parent / "configs" / "pipelines"
    names = sorted(p.name for p in root.glob("*.yaml"))
    assert {"scifact-best.yaml", "all-shared.yaml"} <= set(names)
    for name in names:
        cfg = load_pipeline_config(root / name, lambda d: resolve_dataset_folder(d, data_dir))
        assert cfg.stages.eval is not None and cfg.stages.serve is not None, name
        if cfg.targets is None:
            assert all(spec.split == "test" for spec in cfg.stages.eval.datasets or []), name
        else:
            assert all(t.eval_split == "test" for t in cfg.targets.values()), name
    shared = load_pipeline_config(root / "all-shared.yaml")
    assert {s.name for s in shared.stages.eval.datasets} == {"scifact", "nfcorpus", "wikiqa", "nq-utd"}


def _fake_finished_run(ctx) -> dict[str, str]:
    """Every configured stage's outputs (empty files) and a stamp chained to its inputs, as a
    finished run leaves them; returns each stage's stamp id (by its label: stage[target])."""
    from densekit.pipeline.config import PER_TARGET
    from densekit.pipeline.runner import REGISTRY, plan
    from densekit.pipeline.stamps import Stamp, write_stamp

    ids: dict[str, str] = {}
    for d in plan(ctx):
        if d.action == "off":
            continue
        tctx = ctx.for_target(d.target)
        for p in REGISTRY[d.stage].outputs(tctx):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch()
        stamp = Stamp(d.stage, d.config_sha256 or "", {dep: ids[tctx.label(dep) if dep in PER_TARGET else dep] for dep in d.deps})
        write_stamp(tctx.stage_dir(d.stage), stamp)
        ids[d.label] = stamp.stamp_id
    return ids


def test_the_plan_follows_stamps_outputs_and_inputs(tmp_path, beir_with_train):
    from densekit.pipeline.runner import plan
    from densekit.pipeline.stamps import Stamp, write_stamp

    cfg = _small_config(tmp_path, beir_with_train)
    path = _write(tmp_path / "p.yaml", cfg)
    ctx = _open(path)
    ids = _fake_finished_run(ctx)
    assert _actions(plan(ctx)) == {"mine": "off", "select": "off", **dict.fromkeys(CONFIGURED[1:], "skip")}

    # An output gone: that stage runs, and the stages reading it (eval through the fusion).
    (ctx.index_folder() / "manifest.json").unlink()
    decisions = {d.stage: d for d in plan(ctx)}
    assert decisions["index"].reason.startswith("output missing")
    assert [s for s, d in decisions.items() if d.action == "run"] == ["index", "fusion", "eval", "serve"]
    (ctx.index_folder() / "manifest.json").touch()

    # A stage that re-ran on its own (new stamp id): the stages that read it before run again.
    write_stamp(ctx.stage_dir("fusion"), Stamp("fusion", decisions["fusion"].config_sha256 or "", {"index": ids["index"]}))
    decisions = {d.stage: d for d in plan(ctx)}
    assert [s for s, d in decisions.items() if d.action == "run"] == ["eval", "serve"]
    assert decisions["eval"].reason == "input fusion changed since it ran"

    # A device change is not a config change; an index setting is, for the index and its readers.
    cfg["device"] = "cuda"
    cfg["stages"]["index"]["kind"] = "hnsw"
    ctx = _open(_write(path, cfg))
    decisions = {d.stage: d for d in plan(ctx)}
    assert decisions["index"].reason == "its config changed"
    assert [s for s, d in decisions.items() if d.action == "run"] == ["index", "fusion", "eval", "serve"]


def test_targets_plan_each_target_on_its_own(tmp_path, beir_with_train):
    from densekit.pipeline.runner import plan

    cfg = _small_config(tmp_path, beir_with_train)
    cfg["stages"]["select"] = {"weights": [0.5, 1.0], "default_weight": 0.5}
    cfg["stages"]["eval"]["compare_stages"] = True
    data = str(beir_with_train)
    _as_targets(cfg, {"tuned": {"data": data, "tune": {"split": "train"}}, "plain": {"data": data}})
    path = _write(tmp_path / "p.yaml", cfg)
    ctx = _open(path)
    per_target = ["select", "index", "fusion", "eval", "serve"]
    first = plan(ctx)
    # The shared stages once, then each target's stages under OUT/targets/<name>/.
    assert [d.label for d in first if d.action == "run"] == ["biencoder", "reranker"] + [
        f"{s}[{t}]" for t in ("tuned", "plain") for s in per_target
    ]
    assert ctx.for_target("plain").stage_dir("index") == ctx.out / "targets" / "plain" / "index"
    assert ctx.for_target("plain").stage_dir("biencoder") == ctx.out / "biencoder"
    assert ctx.cfg.stages.select.weights == [0.0, 0.5, 1.0]  # the base model is always a candidate
    _fake_finished_run(ctx)
    assert {d.action for d in plan(ctx)} == {"off", "skip"}

    # The untuned target's default weight: its stages re-run, the tuned target's do not.
    cfg["stages"]["select"]["default_weight"] = 1.0
    ctx = _open(_write(path, cfg))
    assert [d.label for d in plan(ctx) if d.action == "run"] == [f"{s}[plain]" for s in per_target]

    # The grid: the tuned target only. A new tuning split for plain: plain only.
    cfg["stages"]["select"]["default_weight"] = 0.5
    cfg["stages"]["select"]["weights"] = [0.25, 1.0]
    ctx = _open(_write(path, cfg))
    assert [d.label for d in plan(ctx) if d.action == "run"] == [f"{s}[tuned]" for s in per_target]
    cfg["stages"]["select"]["weights"] = [0.5, 1.0]
    cfg["targets"]["plain"]["tune"] = {"split": "train"}
    ctx = _open(_write(path, cfg))
    assert [d.label for d in plan(ctx) if d.action == "run"] == [f"{s}[plain]" for s in per_target]

    # The bi-encoder's data: every stage after it, for every target.
    cfg["stages"]["biencoder"]["seed"] = 1
    ctx = _open(_write(path, cfg))
    assert [d.label for d in plan(ctx) if d.action == "run"] == ["biencoder", "reranker"] + [
        f"{s}[{t}]" for t in ("tuned", "plain") for s in per_target
    ]


def test_a_held_out_copy_has_the_same_corpus_as_its_source(tiny_beir, tmp_path):
    from densekit.data.hold_out import hold_out_beir
    from densekit.pipeline.search_stages import same_corpus_file

    (tiny_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td5\t1\nq3\td2\t1\n")
    hold_out_beir(tiny_beir, tmp_path / "copy", fraction=0.34)
    assert same_corpus_file(tiny_beir, tmp_path / "copy") and same_corpus_file(tiny_beir, tiny_beir)
    other = shutil.copytree(tiny_beir, tmp_path / "other")
    with (other / "corpus.jsonl").open("a") as fh:
        fh.write(json.dumps({"_id": "extra", "title": "", "text": "one more"}) + "\n")
    assert not same_corpus_file(tiny_beir, other)


def test_select_without_targets_chooses_on_the_index_dataset(tmp_path, beir_with_train):
    from densekit.pipeline.runner import plan

    cfg = _small_config(tmp_path, beir_with_train)
    cfg["stages"]["select"] = {"split": "train"}
    ctx = _open(_write(tmp_path / "p.yaml", cfg))
    decisions = {d.stage: d for d in plan(ctx)}
    assert decisions["select"].action == "run" and decisions["select"].deps == ["biencoder"]
    # The index, eval and serve read the select stage's model, not the trained one directly.
    assert decisions["index"].deps == ["select"] and "select" in decisions["eval"].deps
    assert "select" in decisions["serve"].deps and "biencoder" not in decisions["serve"].deps
    assert ctx.tuning_split("select") == (str(beir_with_train), "train")
    assert ctx.stage_dir("select") == ctx.out / "select"
    # Before it ran there is no choice to read: a clear error, not a stack trace.
    with pytest.raises(InvalidInputError, match="no readable select choice"):
        ctx.retriever_model()


def test_best_weight_takes_the_smallest_of_equal_scores():
    from densekit.pipeline.select_stage import best_weight

    assert best_weight({0.0: 0.30, 0.5: 0.31, 1.0: 0.29}) == 0.5
    assert best_weight({0.0: 0.30, 0.5: 0.32, 1.0: 0.32}) == 0.5
    assert best_weight({0.0: 0.40, 0.5: 0.40, 1.0: 0.40}) == 0.0


def test_a_moved_output_folder_keeps_its_stamps(tmp_path, beir_with_train):
    from densekit.pipeline.runner import plan

    cfg = _small_config(tmp_path, beir_with_train)
    ctx = _open(_write(tmp_path / "p.yaml", cfg))
    _fake_finished_run(ctx)
    shutil.move(str(tmp_path / "out"), str(tmp_path / "elsewhere"))
    cfg["out"] = str(tmp_path / "elsewhere")
    moved = _open(_write(tmp_path / "p.yaml", cfg))
    assert set(_actions(plan(moved)).values()) == {"off", "skip"}


# ---- the settings file `densekit serve --config` reads --------------------------------------


def test_settings_file_resolves_paths_from_its_folder_and_rejects_unknown_keys(tmp_path, capsys):
    from densekit.settings_file import read_settings_file, settings_from_file

    folder = tmp_path / "servable"
    (folder / "reranker").mkdir(parents=True)
    path = _write(folder / "serve.yaml", {"index_dir": "index", "reranker": "reranker", "model": "org/hub-model", "rerank_top_n": 7})
    s = settings_from_file(path)
    assert s.index_dir == folder.resolve() / "index" and s.reranker == str(folder.resolve() / "reranker")
    assert s.model == "org/hub-model" and s.rerank_top_n == 7
    _write(path, {"index_dirr": "index"})
    with pytest.raises(ConfigError, match="index_dirr.*unknown setting"):
        read_settings_file(path)
    _write(path, {"rerank_top_n": 0})
    with pytest.raises(ConfigError, match="rerank_top_n") as err:
        read_settings_file(path)
    assert str(path) in str(err.value)
    assert run_cli(["serve", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "settings file not found" in capsys.readouterr().err


def test_serve_config_fills_only_what_flags_and_the_environment_leave_unset(tmp_path, monkeypatch):
    from densekit.cli.serve_cmd import _fill_from_file

    path = _write(tmp_path / "serve.yaml", {"rerank_top_n": 7, "max_top_k": 50, "port": 9000, "index_dir": "index"})
    monkeypatch.setenv("DENSEKIT_MAX_TOP_K", "60")
    monkeypatch.delenv("DENSEKIT_RERANK_TOP_N", raising=False)
    monkeypatch.delenv("DENSEKIT_INDEX_DIR", raising=False)
    flags = {"rerank_top_n": None, "max_top_k": None, "port": 9100, "index_dir": None}
    _fill_from_file(flags, path)
    assert flags == {"rerank_top_n": 7, "max_top_k": None, "port": 9100, "index_dir": str(tmp_path.resolve() / "index")}


def test_pooled_training_reads_each_dataset_from_the_mine_stage(tmp_path, beir_with_train, tiny_st_model_dir):
    from densekit.pipeline.runner import run_pipeline
    from densekit.pipeline.stamps import read_stamp

    second = shutil.copytree(beir_with_train, tmp_path / "other-set")
    cfg = {
        "out": str(tmp_path / "out"),
        "device": "cpu",
        "stages": {
            "mine": {"rank_start": 0, "rank_end": 6, "margin": None, "num_negatives": 2},
            "biencoder": {
                "model": str(tiny_st_model_dir),
                "data": {"datasets": [{"beir": str(beir_with_train)}, {"beir": str(second)}], "num_negatives": 1},
                "train": {"batch_size": 2, "max_steps": 1, "warmup_ratio": 0.0, "max_seq_length": 32},
            },
        },
    }
    decisions = run_pipeline(_open(_write(tmp_path / "p.yaml", cfg)))
    assert [d.stage for d in decisions if d.action == "run"] == ["mine", "biencoder"]
    out = tmp_path / "out"
    mined = {p.name for p in (out / "mine").glob("*.jsonl")}
    assert mined == {"tiny.jsonl", "other-set.jsonl"}
    notes = json.loads((out / "biencoder" / "summary.json").read_text())["data"]["datasets"]
    for name in ("tiny", "other-set"):
        assert notes[name]["beir_pairs"] == {"source": "mined", "file": str(out / "mine" / f"{name}.jsonl"), "queries": 3}
        assert "mining" not in notes[name]  # read, not mined again
    assert read_stamp(out / "biencoder").inputs == {"mine": read_stamp(out / "mine").stamp_id}


# ---- a tiny pipeline end to end -------------------------------------------------------------


def _slice_scifact(src: Path, dst: Path, n_train: int = 12, n_test: int = 6, n_extra_docs: int = 120) -> Path:
    """A small BEIR folder cut from SciFact: the judged documents of a few train and test
    queries plus a fixed sample of other documents."""
    import csv
    import random

    from densekit.data.beir import load_corpus, load_qrels, load_queries

    corpus, queries = load_corpus(src), load_queries(src)
    qrels = {s: load_qrels(src, s) for s in ("train", "test")}
    keep = {"train": sorted(qrels["train"])[:n_train], "test": sorted(qrels["test"])[:n_test]}
    docs = {d for s in keep for q in keep[s] for d in qrels[s][q]} | set(random.Random(0).sample(sorted(corpus), n_extra_docs))
    (dst / "qrels").mkdir(parents=True)
    with (dst / "corpus.jsonl").open("w") as fh:
        for d in sorted(docs):
            fh.write(json.dumps({"_id": d, "title": corpus[d]["title"], "text": corpus[d]["text"]}) + "\n")
    with (dst / "queries.jsonl").open("w") as fh:
        for q in sorted({q for s in keep for q in keep[s]}):
            fh.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    for s, qs in keep.items():
        with (dst / "qrels" / f"{s}.tsv").open("w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t")
            w.writerow(["query-id", "corpus-id", "score"])
            for q in qs:
                for d, g in qrels[s][q].items():
                    w.writerow([q, d, g])
    return dst


def _tiny_pipeline(tmp_path: Path, data: Path, encoder: Path, cross_base: Path) -> dict:
    return {
        "out": str(tmp_path / "out"),
        "device": "cpu",
        "model": str(encoder),
        "stages": {
            "mine": {"rank_start": 0, "rank_end": 20, "margin": None, "num_negatives": 2},
            "biencoder": {
                "model": str(encoder),
                "seed": 7,
                "data": {"beir": str(data), "num_negatives": 1},
                "loss": {"name": "infonce"},
                "train": {"batch_size": 4, "max_steps": 2, "learning_rate": 1e-3, "warmup_ratio": 0.0, "max_seq_length": 48},
            },
            "index": {"data": str(data), "lexical": True},
            "fusion": {"split": "train", "top_k": 50},
            "reranker": {
                "kind": "cross-encoder",
                "model": str(cross_base),
                "data": {"beir": str(data)},
                "negatives": {"top_k": 5, "hard": 2, "random": 1},
                "train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3, "max_length": 64, "logging_steps": 1, "head": "mean"},
            },
            "eval": {"datasets": [str(data)], "rerank_top_n": 10, "top_k": 50, "auc_negatives": 20},
            "serve": {"settings": {"max_top_k": 100}},
        },
    }


def _mtimes(out: Path, stages: list[str]) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for s in stages for p in (out / s).rglob("*") if p.is_file()}


def _actions(decisions) -> dict[str, str]:
    return {d.stage: d.action for d in decisions}


@pytest.mark.slow
def test_tiny_pipeline_runs_skips_reruns_what_changed_and_serves(tmp_path, data_dir, tiny_st_model_dir):
    from fastapi.testclient import TestClient

    from densekit.pipeline.runner import LOG_FILE, plan, run_pipeline
    from densekit.pipeline.stamps import read_stamp
    from densekit.service.app import create_app
    from densekit.settings_file import settings_from_file

    data = _slice_scifact(data_dir / "scifact", tmp_path / "scifact-slice")
    cfg = _tiny_pipeline(tmp_path, data, tiny_st_model_dir, tiny_st_model_dir.parent / "bert")
    path = _write(tmp_path / "pipeline.yaml", cfg)
    out = tmp_path / "out"

    first = run_pipeline(_open(path))
    assert _actions(first) == {**dict.fromkeys(CONFIGURED, "run"), "select": "off"}
    stamps = {s: read_stamp(out / s) for s in CONFIGURED}
    assert all(stamps.values())
    assert stamps["biencoder"].inputs == {"mine": stamps["mine"].stamp_id}
    assert set(stamps["serve"].inputs) == {"index", "fusion", "biencoder", "reranker"}
    assert (out / "mine" / "scifact-slice.jsonl").is_file() and (out / "biencoder" / "model").is_dir()
    assert stamps["eval"].summary["scifact-slice"]["hybrid+reranker"]["ndcg@10"] >= 0
    assert json.loads((out / "fusion" / "fusion.json").read_text())["split"] == "train"

    # Nothing changed: every stage is skipped and no output is touched.
    before = _mtimes(out, list(CONFIGURED))
    again = run_pipeline(_open(path))
    assert _actions(again) == {**dict.fromkeys(CONFIGURED, "skip"), "select": "off"}
    assert _mtimes(out, list(CONFIGURED)) == before
    log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines()]
    assert [r["action"] for r in log[-len(CONFIGURED) :]] == ["skip"] * len(CONFIGURED)

    # The reranker's steps change: it and the stages reading it re-run, nothing before it.
    changed = copy.deepcopy(cfg)
    changed["stages"]["reranker"]["train"]["max_steps"] = 3
    _write(path, changed)
    predicted = plan(_open(path))
    assert _actions(predicted) == {**dict.fromkeys(CONFIGURED, "skip"), "select": "off", "reranker": "run", "eval": "run", "serve": "run"}
    assert [d.reason for d in predicted if d.stage == "reranker"] == ["its config changed"]
    third = run_pipeline(_open(path))
    assert _actions(third) == _actions(predicted)
    upstream = ["mine", "biencoder", "index", "fusion"]
    assert _mtimes(out, upstream) == {k: v for k, v in before.items() if k.split(os.sep)[0] in upstream}
    assert read_stamp(out / "reranker").summary["steps"] == 3
    assert read_stamp(out / "serve").inputs["reranker"] == read_stamp(out / "reranker").stamp_id

    # --from index forces it and, through their inputs, the stages reading it (eval reads the
    # tuned fusion); the bi-encoder and the reranker are left alone.
    forced = plan(_open(path), from_stage="index")
    assert _actions(forced) == {
        "mine": "skip",
        "biencoder": "skip",
        "select": "off",
        "index": "run",
        "fusion": "run",
        "reranker": "skip",
        "eval": "run",
        "serve": "run",
    }
    assert [d.reason for d in forced if d.stage in ("index", "eval")] == ["forced by --from index", "input fusion runs"]

    # The servable folder, moved elsewhere, loads in the real app and reranks /search.
    served = shutil.copytree(out / "serve", tmp_path / "moved")
    settings = settings_from_file(served / "serve.yaml", device="cpu", log_json=False)
    assert settings.reranker == str(served.resolve() / "reranker") and settings.rerank_top_n == 10
    with TestClient(create_app(settings)) as client:
        info = client.get("/info").json()
        assert info["reranker"] and info["index"]["search_mode"] == "hybrid"
        query = json.loads((data / "queries.jsonl").read_text().splitlines()[0])["text"]
        r = client.post("/search", json={"query": query, "top_k": 3, "rerank": True})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert len(hits) == 3 and all("rerank_score" in h for h in hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.slow
def test_tiny_pipeline_with_targets_chooses_per_target_and_serves_each(tmp_path, data_dir, tiny_st_model_dir):
    from fastapi.testclient import TestClient

    from densekit.pipeline.runner import plan, run_pipeline
    from densekit.pipeline.select_stage import best_weight
    from densekit.pipeline.stamps import read_stamp
    from densekit.service.app import create_app
    from densekit.settings_file import settings_from_file

    data = _slice_scifact(data_dir / "scifact", tmp_path / "scifact-slice")
    cfg = _tiny_pipeline(tmp_path, data, tiny_st_model_dir, tiny_st_model_dir.parent / "bert")
    del cfg["stages"]["reranker"]
    cfg["stages"]["select"] = {"weights": [0.5, 1.0], "default_weight": 0.0, "top_k": 50}
    cfg["stages"]["eval"]["compare_stages"] = True
    cfg["stages"]["index"]["fusion"] = {"method": "convex", "alpha": 0.3}
    # The tuned target chooses on half of the slice's train queries, held out into a copy.
    from densekit.data.hold_out import hold_out_beir

    held = hold_out_beir(data, tmp_path / "slice-dev", fraction=0.5)["held_out_queries"]
    tune = {"data": str(tmp_path / "slice-dev"), "split": "dev"}
    _as_targets(cfg, {"tuned": {"data": str(data), "tune": tune}, "plain": {"data": str(data)}})
    path = _write(tmp_path / "pipeline.yaml", cfg)
    out = tmp_path / "out"

    first = run_pipeline(_open(path))
    assert [d.label for d in first if d.action == "run"] == ["mine", "biencoder"] + [
        f"{s}[{t}]" for t in ("tuned", "plain") for s in ("select", "index", "fusion", "eval", "serve")
    ]
    tuned, plain = out / "targets" / "tuned", out / "targets" / "plain"

    # The tuned target: every weight scored on its train split, the best kept, the others' blends deleted.
    choice = json.loads((tuned / "select" / "choice.json").read_text())
    scores = {float(w): v for w, v in choice["scores"].items()}
    assert set(scores) == {0.0, 0.5, 1.0} and choice["split"] == "dev"
    assert choice["weight"] == best_weight(scores)
    blends = sorted(p.name for p in (tuned / "select" / "candidates").glob("*")) if (tuned / "select" / "candidates").exists() else []
    assert blends == ([f"w{choice['weight']:g}"] if choice["weight"] == 0.5 else [])
    fusion = json.loads((tuned / "fusion" / "fusion.json").read_text())
    assert fusion["split"] == "dev" and fusion["queries"] == len(held)
    # Its eval reports base dense first (the paired tests' baseline), the chosen dense model, the hybrid.
    summary = read_stamp(tuned / "eval").summary["tuned"]
    assert list(summary) == ["base-dense", "dense", "hybrid"]
    if choice["weight"] == 0.0:
        assert summary["dense"] == summary["base-dense"]

    # The untuned target: the default weight 0 (the base model, served by name, not copied) and
    # the index stage's fusion.
    assert json.loads((plain / "select" / "choice.json").read_text()) == {"weight": 0.0, "tuned": False}
    assert json.loads((plain / "fusion" / "fusion.json").read_text())["best"]["alpha"] == 0.3
    plain_serve = yaml.safe_load((plain / "serve" / "serve.yaml").read_text())
    assert plain_serve["model"] == str(tiny_st_model_dir) and not (plain / "serve" / "model").exists()
    assert read_stamp(plain / "eval").summary["plain"]["dense"] == read_stamp(plain / "eval").summary["plain"]["base-dense"]

    # Nothing changed: all skipped. The default weight: the untuned target's stages only.
    assert {d.action for d in plan(_open(path))} == {"off", "skip"}
    cfg["stages"]["select"]["default_weight"] = 0.5
    _write(path, cfg)
    tuned_before = _mtimes(out / "targets", ["tuned"])
    third = run_pipeline(_open(path))
    assert [d.label for d in third if d.action == "run"] == [f"{s}[plain]" for s in ("select", "index", "fusion", "eval", "serve")]
    assert _mtimes(out / "targets", ["tuned"]) == tuned_before
    assert (plain / "select" / "candidates" / "w0.5" / "config.json").is_file()

    # Now served from its own copy of the blend, which the real app loads, moved elsewhere.
    served = shutil.copytree(plain / "serve", tmp_path / "moved")
    assert yaml.safe_load((served / "serve.yaml").read_text())["model"] == "model"
    settings = settings_from_file(served / "serve.yaml", device="cpu", log_json=False)
    with TestClient(create_app(settings)) as client:
        assert client.get("/info").json()["index"]["search_mode"] == "hybrid"
        query = json.loads((data / "queries.jsonl").read_text().splitlines()[0])["text"]
        r = client.post("/search", json={"query": query, "top_k": 3})
        assert r.status_code == 200, r.text
        assert len(r.json()["hits"]) == 3
