"""Packaging hook: install ``s3prl_distill_hook.pth`` into site-packages with the package.

The ``.pth`` (one line, ``import _s3prl_distill_hook``) plugs s3prl-distill into S3PRL's unchanged
commands (see ``_s3prl_distill_hook.py``). It must land in site-packages itself, for wheels
(``pip install .``) and editable installs (``pip install -e .``, PEP 660) alike:

* wheel: ``build_py`` writes it to the root of ``build_lib``, which becomes the wheel's purelib;
* editable: setuptools' ``editable_wheel`` points ``install_lib`` at the unpacked editable wheel
  and builds with ``editable_mode``; ``build_py`` writes it there.

Everything else is declared in ``setup.cfg``.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "s3prl_distill_hook.pth"
PTH_TEXT = "import _s3prl_distill_hook\n"


class build_py_with_pth(build_py):
    """``build_py`` that also writes the import-hook ``.pth`` where the wheel's root is built."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            target = self.get_finalized_command("install").install_lib
        else:
            target = self.build_lib
        os.makedirs(target, exist_ok=True)
        path = os.path.join(target, PTH_NAME)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(PTH_TEXT)
        self._pth_output = path

    def get_outputs(self, include_bytecode=True):
        outputs = list(super().get_outputs(include_bytecode))
        if not getattr(self, "editable_mode", False):
            outputs.append(os.path.join(self.build_lib, PTH_NAME))
        return outputs


setup(cmdclass={"build_py": build_py_with_pth})
