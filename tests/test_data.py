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


def _qrels_rows(folder, split):
    return (folder / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]


def test_hold_out_splits_a_beir_split_by_query_and_copies_the_rest(data_dir, tmp_path):
    from cli_support import run_cli

    src = data_dir / "scifact"
    out = tmp_path / "scifact-dev"
    assert run_cli(["data", "hold-out", str(src), "--out", str(out), "--fraction", "0.25", "--seed", "3"]) == 0
    train, dev = load_qrels(out, "train"), load_qrels(out, "dev")
    original = load_qrels(src, "train")
    assert not set(train) & set(dev) and set(train) | set(dev) == set(original)
    assert len(dev) == round(0.25 * len(original))
    # Every judgement goes with its query, verbatim; test and the texts are copies.
    assert sorted(_qrels_rows(out, "train") + _qrels_rows(out, "dev")) == sorted(_qrels_rows(src, "train"))
    assert (out / "qrels" / "test.tsv").read_bytes() == (src / "qrels" / "test.tsv").read_bytes()
    assert (out / "corpus.jsonl").read_bytes() == (src / "corpus.jsonl").read_bytes()
    record = json.loads((out / "hold_out.json").read_text())
    assert set(record["held_out_queries"]) == set(dev) and record["seed"] == 3
    # The same settings draw the same queries; another seed draws others.
    assert run_cli(["data", "hold-out", str(src), "--out", str(tmp_path / "again"), "--fraction", "0.25", "--seed", "3"]) == 0
    assert set(load_qrels(tmp_path / "again", "dev")) == set(dev)
    assert run_cli(["data", "hold-out", str(src), "--out", str(tmp_path / "other"), "--fraction", "0.25", "--seed", "4"]) == 0
    assert set(load_qrels(tmp_path / "other", "dev")) != set(dev)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--split", "dev", "--as", "heldout"], "has no 'dev' split"),
        (["--as", "test"], "already has a 'test' split"),
        (["--as", "train"], "a name other than 'train'"),
        (["--fraction", "1.0"], "between 0 and 1"),
        (["--fraction", "0.01"], "0 held out"),
    ],
)
def test_hold_out_refuses_bad_settings_and_writes_nothing(tiny_beir, tmp_path, capsys, args, words):
    from cli_support import run_cli

    (tiny_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td5\t1\nq3\td2\t1\n")
    assert run_cli(["data", "hold-out", str(tiny_beir), "--out", str(tmp_path / "out"), *args]) == 2
    assert words in " ".join(capsys.readouterr().err.split()) and not (tmp_path / "out").exists()


def test_hold_out_of_pairs_keeps_rows_and_makes_the_held_out_queries_a_dev_split(tmp_path):
    from cli_support import run_cli

    rows = [{"query": f"question {i}", "pos": [f"answer {i}"], "neg": [f"other {i}"]} for i in range(10)]
    rows.append({"query": "question 3 ", "pos": ["answer 3b"]})  # the same query again: held out or kept with it
    p = tmp_path / "pairs.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "held"
    assert run_cli(["data", "hold-out", str(p), "--out", str(out), "--fraction", "0.3"]) == 0
    kept = load_pairs(out / "train_pairs.jsonl")
    dev = load_beir(out, "dev")
    held = set(dev.queries.values())
    assert len(held) == 3 and not held & {r.query.strip() for r in kept}
    assert held | {r.query.strip() for r in kept} == {f"question {i}" for i in range(10)}
    assert len(kept) + sum(1 for r in rows if r["query"].strip() in held) == len(rows)
    # The dev split judges each held-out query's positives among the held-out rows' passages.
    texts = {i: d["text"] for i, d in dev.corpus.items()}
    for qid, text in dev.queries.items():
        n = text.split()[-1]
        assert {texts[d] for d in dev.qrels[qid]} == ({"answer 3", "answer 3b"} if n == "3" else {f"answer {n}"})
    assert all("other" not in texts[d] for judged in dev.qrels.values() for d in judged)


def test_hold_out_never_replaces_a_folder_it_did_not_write(tiny_beir, tmp_path, capsys):
    from cli_support import run_cli

    (tiny_beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td5\t1\nq3\td2\t1\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("user data")
    for out, words in ((other, "not an earlier hold-out"), (tiny_beir.parent, "apart from"), (tiny_beir / "sub", "apart from")):
        assert run_cli(["data", "hold-out", str(tiny_beir), "--out", str(out), "--fraction", "0.34"]) == 2
        assert words in " ".join(capsys.readouterr().err.split())
    assert (other / "keep.txt").read_text() == "user data" and (tiny_beir / "qrels" / "train.tsv").is_file()
    pairs = tiny_beir / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"a{i}"]}) + "\n" for i in range(4)))
    assert run_cli(["data", "hold-out", str(pairs), "--out", str(tiny_beir)]) == 2
    assert "apart from" in capsys.readouterr().err and pairs.is_file()
    # An earlier hold-out is replaced (the same command run again).
    out = tmp_path / "held"
    assert run_cli(["data", "hold-out", str(tiny_beir), "--out", str(out), "--fraction", "0.34"]) == 0
    assert run_cli(["data", "hold-out", str(tiny_beir), "--out", str(out), "--fraction", "0.34", "--seed", "1"]) == 0
    assert json.loads((out / "hold_out.json").read_text())["seed"] == 1
