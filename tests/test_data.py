"""BEIR loading: same counts as beir's GenericDataLoader, and malformed files fail with
the file and line named."""

from __future__ import annotations

import json

import pytest

from densekit.data import load_beir, load_pairs, load_qrels
from densekit.errors import DataFormatError, DatasetNotFoundError

SETS = [
    ("scifact", "test"),
    ("scifact", "train"),
    ("nfcorpus", "test"),
    ("nfcorpus", "dev"),
    ("nfcorpus", "train"),
    ("wikiqa", "test"),
    ("nq-utd", "test"),
    ("squad_subset", "train"),
]


@pytest.mark.parametrize("name,split", SETS)
def test_counts_equal_beir_loader(data_dir, name, split):
    from beir.datasets.data_loader import GenericDataLoader

    folder = data_dir / name
    if not (folder / "qrels" / f"{split}.tsv").is_file():
        pytest.skip(f"{name} has no {split} split here")
    ours = load_beir(folder, split)
    corpus, queries, qrels = GenericDataLoader(str(folder)).load(split=split)
    assert ours.counts == {"documents": len(corpus), "queries": len(queries), "qrels": sum(len(v) for v in qrels.values())}
    assert ours.qrels == qrels
    assert ours.queries == queries
    some = next(iter(corpus))
    assert ours.corpus[some]["text"] == corpus[some]["text"]


def test_tiny_folder_loads(tiny_beir):
    ds = load_beir(tiny_beir, "test")
    assert ds.counts == {"documents": 6, "queries": 3, "qrels": 4}
    assert ds.doc_text("d3") == "Paris Paris is the capital and largest city of France."


def _copy(tiny_beir, tmp_path):
    import shutil

    dst = tmp_path / "bad"
    shutil.copytree(tiny_beir, dst)
    return dst


def test_bad_json_line_names_file_and_line(tiny_beir, tmp_path):
    d = _copy(tiny_beir, tmp_path)
    lines = (d / "corpus.jsonl").read_text().splitlines()
    lines.insert(2, '{"_id": "x", "text": ')
    (d / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as exc:
        load_beir(d, "test")
    assert exc.value.line == 3
    assert str(exc.value).startswith(f"{d / 'corpus.jsonl'}:3:")


@pytest.mark.parametrize(
    "file, bad_line, load, message",
    [
        pytest.param("queries.jsonl", json.dumps({"text": "no id here"}), load_beir, r"queries.jsonl:4: missing '_id'", id="missing-id"),
        pytest.param("qrels/test.tsv", "q1\td4", load_qrels, r"test.tsv:6: expected 3 tab-separated columns", id="short-qrels-row"),
        pytest.param("qrels/test.tsv", "q1\td4\thigh", load_qrels, r"test.tsv:6: score must be an integer", id="non-integer-grade"),
        pytest.param("qrels/test.tsv", "q99\td1\t1", load_beir, "no query text", id="qrels-query-without-text"),
    ],
)
def test_appended_bad_line_is_refused(tiny_beir, tmp_path, file, bad_line, load, message):
    """One bad line added at the end of a file: a DataFormatError that says what is wrong."""
    d = _copy(tiny_beir, tmp_path)
    with (d / file).open("a") as fh:
        fh.write(bad_line + "\n")
    with pytest.raises(DataFormatError, match=message):
        load(d, "test")


def test_unknown_split_lists_available(tiny_beir):
    with pytest.raises(DatasetNotFoundError, match=r"unknown split 'dev'.*available: test"):
        load_beir(tiny_beir, "dev")


def test_pairs_jsonl(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text('{"query": "a", "pos": ["b"], "neg": ["c", "d"]}\n{"query": "e", "pos": "f"}\n')
    rows = load_pairs(p)
    assert [r.neg for r in rows] == [["c", "d"], []]
    assert rows[1].pos == ["f"]
    p.write_text('{"query": "a", "pos": ["b"]}\n{"query": "e", "neg": ["x"]}\n')
    with pytest.raises(DataFormatError, match=r"pairs.jsonl:2: missing 'pos'"):
        load_pairs(p)


def test_real_pairs_files_load(data_dir):
    rows = load_pairs(data_dir / "wikiqa" / "train_pairs.jsonl")
    assert len(rows) == 873
    assert all(r.pos for r in rows)


def test_pairs_become_a_beir_folder_that_beir_reads(tmp_path):
    from beir.datasets.data_loader import GenericDataLoader
    from cli_support import run_cli

    p = tmp_path / "pairs.jsonl"
    rows = [
        {"query": "what is a cat", "pos": ["A cat is a mammal."], "neg": ["A dog barks.", " A cat is a mammal. "]},
        {"query": "what barks", "pos": ["A dog barks."], "neg": ["Fish swim."]},
        {"query": "what is a cat ", "pos": ["Cats purr."]},  # the same query again: one query, both positives
    ]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_cli(["data", "from-pairs", str(p), "--out", str(tmp_path / "beir"), "--split", "dev"]) == 0
    corpus, queries, qrels = GenericDataLoader(str(tmp_path / "beir")).load(split="dev")
    assert sorted(d["text"] for d in corpus.values()) == ["A cat is a mammal.", "A dog barks.", "Cats purr.", "Fish swim."]
    by_text = {d["text"]: i for i, d in corpus.items()}
    assert sorted(queries.values()) == ["what barks", "what is a cat"]
    q = {t: i for i, t in queries.items()}
    assert qrels[q["what is a cat"]] == {by_text["A cat is a mammal."]: 1, by_text["Cats purr."]: 1}
    assert qrels[q["what barks"]] == {by_text["A dog barks."]: 1}
    assert load_beir(tmp_path / "beir", "dev").counts == {"documents": 4, "queries": 2, "qrels": 3}


def test_pairs_with_an_empty_passage_write_nothing(tmp_path, capsys):
    from cli_support import run_cli

    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps({"query": "q", "pos": ["a"], "neg": ["  "]}) + "\n")
    assert run_cli(["data", "from-pairs", str(p), "--out", str(tmp_path / "beir")]) == 2
    assert "row 1" in capsys.readouterr().err and not (tmp_path / "beir").exists()
    assert run_cli(["data", "from-pairs", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "beir")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
