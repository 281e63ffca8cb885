"""Fixtures shared by the service tests: a small built index, its encoder, and a private
copy of the index per test (live updates change the folder)."""

from __future__ import annotations

import shutil

import pytest
from service_support import build_index


@pytest.fixture(scope="module")
def base_index(tmp_path_factory, tiny_st_model_dir):
    return build_index(tiny_st_model_dir, tmp_path_factory.mktemp("svc-index") / "index")


@pytest.fixture(scope="module")
def encoder(tiny_st_model_dir):
    from densekit.encoder import Encoder

    return Encoder(str(tiny_st_model_dir), device="cpu")


@pytest.fixture()
def index_dir(base_index, tmp_path):
    dst = tmp_path / "index"
    shutil.copytree(base_index, dst)
    return dst
