"""`densekit serve --index` (single process) takes a sharded index folder: the check it runs
before loading anything accepts one, and still refuses a path that is no index."""

from __future__ import annotations

import pytest
from test_sharded_index import write_synthetic

from densekit.cli.serve_cmd import check_servable_folder
from densekit.errors import IndexCorruptError
from densekit.index.sharded_build import build_sharded


def test_serve_check_accepts_sharded_and_plain_folders(tmp_path):
    emb, _, _, _ = write_synthetic(tmp_path, 40)
    build_sharded(emb, tmp_path / "sharded", 2, kind="flat")
    check_servable_folder(tmp_path / "sharded")
    check_servable_folder(tmp_path / "sharded" / "shard-00000")
    with pytest.raises(IndexCorruptError):
        check_servable_folder(tmp_path / "no-such-index")
    (tmp_path / "sharded" / "sharded_manifest.json").write_text("{}")
    with pytest.raises(IndexCorruptError):
        check_servable_folder(tmp_path / "sharded")
