"""The imports follow the data flow: converters -> core <- ext <- runtime.

- ``spikecast.ext.core`` (model file, errors, exit reasons, checks, event dtype)
  imports nothing else of spikecast;
- ``spikecast.ext`` (the engine) imports only itself;
- ``spikecast.converters`` imports ext (core and engine), never the runtime;
- ``spikecast.runtime`` imports ext, never the converters (the CLI finds the
  ``convert`` command through an entry point, not an import).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Top-level folder -> import name.
PACKAGES = {"converters": "spikecast.converters", "ext": "spikecast.ext", "runtime": "spikecast.runtime"}
CORE = "spikecast.ext.core"

#: What each part may import from spikecast (by import-name prefix).
ALLOWED = {
    CORE: (CORE,),
    "spikecast.ext": ("spikecast.ext",),
    "spikecast.converters": ("spikecast.converters", "spikecast.ext"),
    "spikecast.runtime": ("spikecast.runtime", "spikecast.ext"),
}


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(ROOT).with_suffix("").parts
    parts = [PACKAGES[folder], *rest]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every spikecast import in a .py or .pyx file (ast for .py;
    the Cython module's Python-level imports are simple enough for a line scan)."""
    if path.suffix == ".pyx":
        out = []
        for i, line in enumerate(path.read_text().splitlines(), 1):
            words = line.split()
            if len(words) >= 2 and words[0] in ("from", "import") and words[1].startswith("spikecast"):
                out.append((i, words[1]))
        return out
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(ln, m) for ln, m in found if m == "spikecast" or m.startswith("spikecast.")]


def owner(module: str) -> str:
    return CORE if module == CORE or module.startswith(CORE + ".") else ".".join(module.split(".")[:2])


def back_edges() -> list[str]:
    bad = []
    for folder in PACKAGES:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in (".py", ".pyx"):
                continue
            me = owner(module_name(path))
            for line, target in imports_of(path):
                if not any(target == ok or target.startswith(ok + ".") for ok in ALLOWED[me]):
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {me} imports {target}")
    return bad


def test_no_import_runs_against_the_data_flow() -> None:
    assert back_edges() == []


def test_the_walker_sees_a_back_edge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The test above can fail: a core module that imported the runtime would be caught.
    fake = tmp_path / "ext" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from spikecast.runtime.decision import OperatingPoint\n")
    for folder in ("converters", "runtime"):
        (tmp_path / folder).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert back_edges() == ["ext/core/bad.py:1: spikecast.ext.core imports spikecast.runtime.decision"]


def run_blocked(blocked: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where importing any of ``blocked`` fails."""
    prelude = textwrap.dedent(
        f"""
        import sys
        BLOCKED = {blocked!r}
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_decision_core_imports_without_torch_the_mqtt_client_prometheus_or_dv() -> None:
    # prometheus_client only comes in with --metrics-port (runtime/prom.py, the "metrics" extra),
    # dv_processing only with a dv:// source (runtime/dv.py, the "dv" extra).
    out = run_blocked(
        ("torch", "aiomqtt", "paho", "tonic", "prometheus_client", "dv_processing"),
        """
        import spikecast.runtime.stream, spikecast.runtime.decision, spikecast.runtime.payload
        import spikecast.runtime.service, spikecast.runtime.mqtt, spikecast.runtime.cli
        import spikecast.runtime.hooks, spikecast.runtime.mqtt.homeassistant
        from spikecast.runtime.mqtt import StdoutPublisher
        heavy = ("torch", "aiomqtt", "paho", "prometheus_client", "dv_processing")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_core_imports_without_the_compiled_engine() -> None:
    out = run_blocked(
        ("torch",),
        """
        import spikecast.ext.core
        print("spikecast.ext._engine" in sys.modules, "spikecast.ext.engine" in sys.modules)
        """,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
