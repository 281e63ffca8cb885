"""Every `--config FILE` is read by one reader: the same errors, naming the file and the line."""

from __future__ import annotations

import sys

import pytest

from densekit.cli.main import main
from densekit.errors import ConfigError
from densekit.yaml_file import read_yaml_file, read_yaml_mapping


def test_missing_file_names_what_it_should_be(tmp_path):
    with pytest.raises(ConfigError) as err:
        read_yaml_file(tmp_path / "nope.yaml", what="pipeline config")
    assert err.value.field == "--config"
    assert err.value.message == f"pipeline config not found: {tmp_path / 'nope.yaml'}"


def test_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        read_yaml_file(path)
    # the flow sequence opened on line 2 is never closed; the parser notices on line 3
    assert err.value.message.startswith(f"{path}:3: not valid YAML")


def test_binary_file_is_a_config_error_not_a_traceback(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_yaml_file(path)


def test_mapping_reader(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    assert read_yaml_mapping(empty) == {}
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level, got list"):
        read_yaml_mapping(listed)
    good = tmp_path / "good.yaml"
    good.write_text("model: m\ntrain: {max_steps: 3}\n", encoding="utf-8")
    assert read_yaml_mapping(good) == {"model": "m", "train": {"max_steps": 3}}


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--config"],
        ["train", "biencoder", "--config"],
        ["pipeline", "run", "--config"],
        ["serve", "--config"],
    ],
)
def test_every_command_reports_the_line_of_a_yaml_error(tmp_path, argv, monkeypatch, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("datasets:\n  - name: scifact\n   split: test\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["densekit", *argv, str(path)])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert f"{path}:3: not valid YAML" in err
    assert "Traceback" not in err
