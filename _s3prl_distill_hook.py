"""Import hook that plugs s3prl-distill into S3PRL's unchanged commands.

Installed with the package as ``s3prl_distill_hook.pth`` in site-packages, whose one line
``import _s3prl_distill_hook`` runs at interpreter start-up. Importing this module costs almost
nothing: it imports only ``sys``/``os`` (no torch, no importlib.abc) and puts one finder at the front
of ``sys.meta_path``. The finder does nothing until one of the watched modules is imported; then it
lets the normal finders load the module and runs our code right after the module's own body:

* ``s3prl`` -> ``s3prl_distill.compat.apply()`` (torchaudio/hub/numpy shims) before any S3PRL
  submodule imports torchaudio;
* ``s3prl.hub`` -> ``s3prl_distill.registry.register(hub)``: our upstreams appear in
  ``dir(s3prl.hub)``, hence in ``python -m s3prl.run_downstream -h``;
* ``s3prl.pretrain`` and S3PRL's top-level ``pretrain`` (run_pretrain from inside S3PRL's folder)
  -> ``s3prl_distill.registry.extend_pretrain_path(module)``.

A failure inside our code is logged with its traceback and does not break S3PRL's own import
(S3PRL's own upstreams keep working); ``python -m s3prl_distill.run_downstream`` calls
``register()`` directly and does raise. Set ``S3PRL_DISTILL_NO_HOOK=1`` to disable the hook.
"""

import os
import sys

__all__ = ["install", "uninstall", "HookFinder", "fired"]

_FIRED = []  # names whose post-import action ran, in order (for tests and debugging)


def _after_s3prl(module):
    import s3prl_distill.compat as compat

    compat.apply()


def _after_hub(module):
    from s3prl_distill import registry

    registry.register(module)


def _is_s3prl_folder(module):
    """Whether a package's folder is ``<...>/s3prl/pretrain`` of an S3PRL install (no imports)."""
    for path in list(getattr(module, "__path__", None) or []):
        parent = os.path.dirname(os.path.realpath(path))
        if os.path.isfile(os.path.join(parent, "hub.py")) and os.path.isfile(
                os.path.join(parent, "run_pretrain.py")):
            return True
    return False


def _after_pretrain(module):
    if module.__name__ == "pretrain" and not _is_s3prl_folder(module):
        return  # some other project's top-level `pretrain`: leave it (and torch) alone
    from s3prl_distill import registry

    registry.extend_pretrain_path(module)


_ACTIONS = {
    "s3prl": _after_s3prl,
    "s3prl.hub": _after_hub,
    "s3prl.pretrain": _after_pretrain,
    "pretrain": _after_pretrain,
}


def _run_action(name, module):
    try:
        _ACTIONS[name](module)
        _FIRED.append(name)
    except Exception:
        import logging

        logging.getLogger("s3prl_distill.hook").exception(
            "s3prl-distill import hook failed after importing %s; S3PRL is usable but the "
            "plugin is not registered (run python -m s3prl_distill.run_downstream to see the "
            "error directly)", name)


class _PostExecLoader:  # duck-typed loader: importlib.abc would cost ~15 ms at start-up
    """Wraps a module's real loader; runs our action after the module body executed."""

    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _run_action(self._name, module)

    def __getattr__(self, attr):  # get_code, get_source, is_package, get_resource_reader, ...
        return getattr(self._loader, attr)


class HookFinder:  # duck-typed meta-path finder (only find_spec is needed)
    """Meta-path finder that only wraps the loaders of the watched module names."""

    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _ACTIONS or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._busy.discard(fullname)
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PostExecLoader(spec.loader, fullname)
        return spec


def install():
    """Put the finder at the front of ``sys.meta_path`` (idempotent). Returns the finder or None."""
    if os.environ.get("S3PRL_DISTILL_NO_HOOK", "") not in ("", "0"):
        return None
    for finder in sys.meta_path:
        if isinstance(finder, HookFinder) or type(finder).__name__ == "HookFinder":
            return finder
    finder = HookFinder()
    sys.meta_path.insert(0, finder)
    # modules imported before the hook was installed (e.g. in a long-lived process)
    for name in _ACTIONS:
        if name in sys.modules and name != "pretrain":
            _run_action(name, sys.modules[name])
    return finder


def uninstall():
    """Remove the finder from ``sys.meta_path``."""
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "HookFinder"]


def fired():
    """Names whose post-import action ran in this process."""
    return list(_FIRED)


install()
