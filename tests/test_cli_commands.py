"""The ``s3prl-distill`` command table is explicit and complete: every module under
``s3prl_distill/commands`` is listed in ``cli.COMMANDS`` under its own name (``_`` spelled ``-``), and every listed module
exists with ``HELP``, ``add_arguments`` and ``run`` (the table is lazy only about WHEN it imports)."""

from __future__ import annotations

import argparse
import importlib
import os

from s3prl_distill import cli

COMMANDS_DIR = os.path.join(os.path.dirname(cli.__file__), "commands")


def test_every_command_module_is_listed_and_loads():
    modules = sorted(f[:-3] for f in os.listdir(COMMANDS_DIR)
                     if f.endswith(".py") and f != "__init__.py")
    # a command's module is its name with '-' spelled '_' (validate-superb -> validate_superb)
    assert sorted(name.replace("-", "_") for name in cli.COMMANDS) == modules
    for name, path in cli.COMMANDS.items():
        assert path == f"s3prl_distill.commands.{name.replace('-', '_')}"
        module = importlib.import_module(path)
        assert isinstance(module.HELP, str) and module.HELP
        assert callable(module.run)
        module.add_arguments(argparse.ArgumentParser(prog=name))  # declares its options
