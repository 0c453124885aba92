"""The ``s3prl-distill`` dispatcher."""

from __future__ import annotations

import types

import pytest

from s3prl_distill import cli


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_dispatches_to_the_chosen_module(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(
        HELP="fake command",
        add_arguments=lambda p: p.add_argument("--n", type=int, default=1),
        run=lambda args: calls.append(args.n) or 7,
    )
    monkeypatch.setitem(cli.COMMANDS, "fake", "fake.module")
    monkeypatch.setattr(cli, "_load", lambda name: fake if name == "fake" else None)
    assert cli.main(["fake", "--n", "3"]) == 7
    assert calls == [3]


def test_missing_module_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "ghost", "s3prl_distill.commands.does_not_exist")
    with pytest.raises(SystemExit):
        cli.main(["ghost"])
    assert "command 'ghost' is not available" in capsys.readouterr().err
