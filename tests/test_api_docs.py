"""book/api.md documents every public function and class: the names the three namespaces
export (`robustft`, `robustft.kernels`, `robustft.offline`) and everything without a leading
underscore that a library module defines. The command line (`robustft.cli`) is documented by
`robustft --help` and the README instead."""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import robustft

API = (Path(__file__).resolve().parents[1] / "book" / "api.md").read_text()
NOT_LIBRARY = {"robustft.cli"}


def documented() -> set[str]:
    """Dotted names that api.md's automodule/autofunction/autoclass directives pull in."""
    names = set()
    for mod, flag, members in re.findall(r"\.\. automodule:: (\S+)\n(?:[ \t]+(:members:)([^\n]*)\n)?", API):
        listed = {m.strip() for m in members.split(",") if m.strip()}
        if flag and not listed:  # a bare :members: pulls in every public member with a docstring
            listed = {k for k, v in vars(importlib.import_module(mod)).items()
                      if not k.startswith("_") and getattr(v, "__doc__", None) and getattr(v, "__module__", None) == mod}
        names |= {f"{mod}.{m}" for m in listed}
    names |= set(re.findall(r"\.\. auto(?:function|class|data):: (\S+)", API))
    return names


def defined_public(module) -> list[str]:
    return [f"{module.__name__}.{k}" for k, v in vars(module).items()
            if not k.startswith("_") and (inspect.isfunction(v) or inspect.isclass(v))
            and v.__module__ == module.__name__]


def test_every_exported_name_is_documented():
    import robustft.kernels
    import robustft.offline

    docs = documented()
    short = {d.rsplit(".", 1)[1] for d in docs}
    missing = [f"{ns.__name__}.{n}" for ns in (robustft, robustft.kernels, robustft.offline)
               for n in ns.__all__ if n not in short and not n.isupper()]  # constants are described in prose
    assert not missing, missing


def test_every_public_function_of_the_library_modules_is_documented():
    docs = documented()
    modules = [f"robustft.{m.name}" for m in pkgutil.iter_modules(robustft.__path__)
               if not m.ispkg and f"robustft.{m.name}" not in NOT_LIBRARY]
    missing = [n for m in modules for n in defined_public(importlib.import_module(m)) if n not in docs]
    assert not missing, missing
