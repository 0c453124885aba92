"""Finding upstream_configs/ from the working folder, the checkout, or a wheel's share/ folder."""

from __future__ import annotations

import sys

import pytest

from s3prl_distill import paths


def test_source_checkout_is_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found = paths.upstream_configs_dir()
    assert (found / "distilhubert.yaml").is_file()
    assert (found / "fithubert.yaml").is_file()


def test_working_folder_copy_wins(tmp_path, monkeypatch):
    (tmp_path / "upstream_configs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert paths.upstream_configs_dir() == tmp_path / "upstream_configs"


def test_wheel_share_folder_then_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(paths, "_SOURCE_ROOT", tmp_path / "nowhere")
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    with pytest.raises(FileNotFoundError, match="upstream_configs/ not found; searched: .*prefix"):
        paths.upstream_configs_dir()
    share = tmp_path / "prefix" / "share" / "s3prl-distill" / "upstream_configs"
    share.mkdir(parents=True)
    assert paths.upstream_configs_dir() == share
