"""The import rules of ARCHITECTURE.md ("Layers of the Python package"), checked on the source.

Every module of the daptq_ros package is parsed with `ast`; nothing is imported, so the check
needs neither ROS nor torch and takes well under a second. Every import counts: at module level,
inside functions (the lazy imports) and `importlib.import_module("daptq_ros.<layer>...")` with a
literal (or f-string) name; relative imports are resolved against the module's package.

A module's layer is its first path part under daptq_ros/ (`quant/api.py` -> quant, `cli.py` ->
cli). The rules:

1. Layers import only downward, as LAYER_IMPORTS says; every layer may import itself and the
   HELPERS (`daptq_ros.errors`, `daptq_ros.share`, the package root). A module in a layer the
   table does not name is a violation too, so a new layer gets a rule before it gets code.
2. Only nodes/ imports ROS (rclpy, cv_bridge, launch, launch_ros, message packages...). The
   launch files (daptq_ros/launch/) live outside the Python package and are not checked.
3. bags/, control/ and drift/ know nothing about torch (nor torchao, transformers).
4. The core (LIBRARY_LAYERS) holds library code only: no matplotlib, and no markdown. The
   markdown check is deliberately simple: outside docstrings, no string literal (f-string
   parts included) holds a table separator (three dashes next to a pipe, as in `|---|`) or is
   a `.md` file name (`"report.md"`, the `.md` of `f"{name}.md"`). Reports, plots and
   benchmarks belong in evidence/ (or commands/, bench/), which sit above the core.

The self-tests at the end feed `check_module` small synthetic sources that break each rule, so
the checker is shown to fail when a rule is broken.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path, PurePosixPath

import pytest

PACKAGE = "daptq_ros"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE

# Module-level helpers any layer may import ("" is the package root: `import daptq_ros`).
HELPERS = {"", "errors", "share"}
CORE = {"quant", "bags", "control", "drift", "policy", "sim", "robot"}
ABOVE_CORE = CORE | {"evidence", "commands", "cli"}
# Which of our layers each layer may import, besides itself and HELPERS (ARCHITECTURE.md,
# "arrows = may import"). This is the table the code satisfies.
LAYER_IMPORTS: dict[str, set[str]] = {
    "__init__": set(),  # daptq_ros/__init__.py
    "errors": set(),
    "share": set(),
    "quant": set(),  # torch only
    "bags": set(),  # rosbags, numpy only
    "control": set(),  # numpy only
    "drift": {"bags"},
    "policy": {"quant", "bags"},
    "sim": {"policy", "bags", "drift"},
    "robot": {"control", "policy", "drift", "bags", "sim"},
    "nodes": {"robot"},
    # Above the core: evidence/ (benchmarks, reports, plots, the demo job) on the core; the
    # `daptq` command and its subcommands on anything but nodes.
    "evidence": CORE,
    "commands": ABOVE_CORE,
    "cli": ABOVE_CORE,
}
ROS_MODULES = {
    "rclpy",
    "cv_bridge",
    "launch",
    "launch_ros",
    "launch_testing",
    "ament_index_python",
    "rosidl_runtime_py",
    "rcl_interfaces",
    "message_filters",
    "tf2_ros",
    "daptq_ros_interfaces",
}
ROS_SUFFIXES = ("_msgs", "_srvs")  # sensor_msgs, std_srvs, ...: generated ROS messages
ROS_LAYERS = {"nodes"}
TORCH_MODULES = {"torch", "torchao", "transformers"}
NO_TORCH_LAYERS = {"bags", "control", "drift"}
LIBRARY_LAYERS = CORE | {"nodes"}  # no matplotlib, no markdown
TABLE_SEPARATOR = re.compile(r"\|\s*:?-{3,}|-{3,}:?\s*\|")  # |---|, | --- |, |:--
MD_FILE_NAME = re.compile(r"[\w./{}-]*\.md")  # the whole literal


def layer_of(relpath: PurePosixPath) -> str:
    """quant/api.py -> quant; cli.py -> cli; __init__.py -> __init__."""
    return relpath.parts[0] if len(relpath.parts) > 1 else relpath.stem


def _module_parts(relpath: PurePosixPath) -> list[str]:
    """daptq_ros.quant.api of quant/api.py, as parts (a package's __init__ is the package)."""
    parts = [PACKAGE, *relpath.with_suffix("").parts]
    return parts[:-1] if parts[-1] == "__init__" else parts


def _resolve(node: ast.ImportFrom, relpath: PurePosixPath) -> str:
    """The absolute module of a `from ... import`, relative ones resolved."""
    if node.level == 0:
        return node.module or ""
    package = _module_parts(relpath)
    if relpath.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _dynamic_name(call: ast.Call) -> str | None:
    """The module of importlib.import_module("...") / __import__("..."), literal prefix only."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not call.args:
        return None
    arg = call.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        first = arg.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            # "daptq_ros.commands.{name}" -> "daptq_ros.commands" (only whole parts count)
            return first.value.rsplit(".", 1)[0] if "." in first.value else None
    return None


def imported_modules(tree: ast.AST, relpath: PurePosixPath) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the tree; `from daptq_ros import x` gives
    daptq_ros.x."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(node, relpath)
            if module == PACKAGE:
                found += [(node.lineno, f"{PACKAGE}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
        elif isinstance(node, ast.Call) and (name := _dynamic_name(node)):
            found.append((node.lineno, name))
    return found


def _our_layer(module: str) -> str | None:
    """The layer a daptq_ros module belongs to ("" for the root or a root attribute), or None
    for a module that is not ours."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    if len(parts) == 1 or parts[1].startswith("_"):
        return ""  # `import daptq_ros`, `from daptq_ros import __version__`
    return parts[1]  # a layer the table does not name is allowed nowhere


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of the module, its classes and its functions."""
    ids = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
        ):
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def markdown_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of string literals outside docstrings that write markdown (see the module
    docstring): a table separator, or a .md file name."""
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and (TABLE_SEPARATOR.search(node.value) or MD_FILE_NAME.fullmatch(node.value))
        ):
            found.append((node.lineno, node.value))
    return found


def check_module(source: str, relpath: str) -> list[str]:
    """Every rule `source` (the text of daptq_ros/<relpath>) breaks, one line each."""
    path = PurePosixPath(relpath)
    layer = layer_of(path)
    tree = ast.parse(source, filename=relpath)
    if layer not in LAYER_IMPORTS:
        return [f"{relpath}: layer {layer!r} has no rule in LAYER_IMPORTS"]
    allowed = LAYER_IMPORTS[layer] | HELPERS | {layer}
    violations = []
    for line, module in imported_modules(tree, path):
        top = module.split(".")[0]
        ours = _our_layer(module)
        if ours is not None and ours not in allowed:
            violations.append(f"{relpath}:{line}: {layer} may not import {module}")
        if (top in ROS_MODULES or top.endswith(ROS_SUFFIXES)) and layer not in ROS_LAYERS:
            violations.append(f"{relpath}:{line}: only nodes/ imports ROS ({module})")
        if top in TORCH_MODULES and layer in NO_TORCH_LAYERS:
            violations.append(f"{relpath}:{line}: {layer} knows nothing about torch ({module})")
        if top == "matplotlib" and layer in LIBRARY_LAYERS:
            violations.append(f"{relpath}:{line}: plots belong in evidence/ ({module})")
    if layer in LIBRARY_LAYERS:
        violations += [
            f"{relpath}:{line}: markdown belongs in evidence/ ({text[:40]!r})"
            for line, text in markdown_literals(tree)
        ]
    return violations


def _package_modules() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_keeps_the_layer_rules():
    modules = _package_modules()
    assert len(modules) > 50 and (SOURCE / "evidence" / "__init__.py") in modules
    violations = [
        v
        for path in modules
        for v in check_module(path.read_text(), path.relative_to(SOURCE).as_posix())
    ]
    assert violations == []


def test_core_layers_hold_only_library_code():
    """No module under quant/ policy/ drift/ control/ bags/ (nor sim/ robot/ nodes/) imports
    matplotlib or writes markdown (the rules' fourth kind, on the real tree)."""
    offenders = []
    for path in _package_modules():
        relpath = path.relative_to(SOURCE)
        if layer_of(relpath) not in LIBRARY_LAYERS:
            continue
        tree = ast.parse(path.read_text())
        offenders += [
            f"{relpath}: {module}"
            for _, module in imported_modules(tree, relpath)
            if module.split(".")[0] == "matplotlib"
        ]
        offenders += [f"{relpath}:{line}: {text[:40]!r}" for line, text in markdown_literals(tree)]
    assert offenders == []
    assert {"quant", "policy", "drift", "control", "bags"} <= LIBRARY_LAYERS


def test_the_core_never_imports_above_itself_and_the_table_has_no_cycle():
    for layer in CORE | {"errors", "share"}:
        assert LAYER_IMPORTS[layer] <= CORE, layer
    assert all("nodes" not in LAYER_IMPORTS[layer] for layer in LAYER_IMPORTS if layer != "nodes")
    order: list[str] = []  # a topological order of the core exists: no cycle
    remaining = {layer: set(LAYER_IMPORTS[layer]) for layer in CORE}
    while remaining:
        ready = [layer for layer, deps in remaining.items() if deps <= set(order)]
        assert ready, f"cycle among {sorted(remaining)}"
        order += sorted(ready)
        for layer in ready:
            del remaining[layer]


# --- the checker fails when a rule is broken -------------------------------------------------

BROKEN = [
    # (relpath, source, what the violation says)
    ("quant/x.py", "from daptq_ros.policy import Policy\n", "quant may not import"),
    ("quant/x.py", "def f():\n    import daptq_ros.drift.metrics\n", "quant may not import"),
    ("bags/x.py", "from ..drift import metrics\n", "bags may not import daptq_ros.drift"),
    ("bags/sub/x.py", "from ...control import safety\n", "may not import daptq_ros.control"),
    ("control/x.py", "from daptq_ros import bags\n", "control may not import daptq_ros.bags"),
    ("drift/x.py", "from daptq_ros.sim.env import make\n", "drift may not import"),
    ("policy/x.py", "import importlib\nimportlib.import_module('daptq_ros.sim.env')\n", "policy"),
    ("policy/x.py", "from daptq_ros.evidence.kernel_bench import median_latency_ms\n", "policy"),
    ("sim/x.py", "from daptq_ros.robot import policy_core\n", "sim may not import"),
    ("robot/x.py", "from daptq_ros.commands import eval\n", "robot may not import"),
    ("nodes/x.py", "from daptq_ros.bags.convert import image_to_numpy\n", "nodes may not"),
    ("evidence/x.py", "from daptq_ros.nodes import common\n", "evidence may not import"),
    ("commands/x.py", "def run():\n    from daptq_ros.nodes.common import spin\n", "commands"),
    ("cli.py", "import importlib\nimportlib.import_module(f'daptq_ros.nodes.{n}')\n", "cli"),
    ("newlayer/x.py", "x = 1\n", "has no rule"),
    ("quant/x.py", "from daptq_ros.newlayer import x\n", "quant may not import"),
    ("robot/x.py", "import rclpy\n", "only nodes/ imports ROS"),
    ("policy/x.py", "def f():\n    from cv_bridge import CvBridge\n", "only nodes/ imports ROS"),
    ("commands/x.py", "from launch_ros.actions import Node\n", "only nodes/ imports ROS"),
    ("sim/x.py", "from sensor_msgs.msg import Image\n", "only nodes/ imports ROS"),
    ("control/x.py", "import torch\n", "knows nothing about torch"),
    ("drift/x.py", "def f():\n    from transformers import AutoModel\n", "nothing about torch"),
    ("drift/x.py", "from matplotlib.figure import Figure\n", "plots belong in evidence/"),
    ("quant/x.py", "def f():\n    import matplotlib.pyplot as plt\n", "plots belong"),
    ("policy/x.py", "ROWS = ['| a | b |', '|---|---|']\n", "markdown belongs in evidence/"),
    ("bags/x.py", "def f(r):\n    return f'| {r} |\\n| --- |'\n", "markdown belongs"),
    ("control/x.py", "def f(out):\n    (out / 'report.md').write_text('')\n", "markdown"),
    ("drift/x.py", "def f(out, name):\n    return out / f'{name}.md'\n", "markdown belongs"),
]

KEPT = [
    # (relpath, source): the same kinds of code, where the rules allow them
    ("quant/x.py", "import torch\nfrom daptq_ros.errors import QuantError\n"),
    ("quant/x.py", "from daptq_ros.share import share_path\nfrom . import api\n"),
    ("policy/x.py", "from daptq_ros.quant import quantize\n"),
    ("drift/x.py", "from daptq_ros.bags import read_trajectory\nfrom .metrics import dtw\n"),
    ("sim/x.py", "from daptq_ros.policy import Policy\nfrom daptq_ros.drift import metrics\n"),
    ("robot/x.py", "from daptq_ros.sim.env import make\nfrom daptq_ros.control import safety\n"),
    (
        "nodes/x.py",
        "import rclpy\nfrom sensor_msgs.msg import Image\nfrom daptq_ros.robot import arm\n",
    ),
    ("evidence/x.py", "from matplotlib.figure import Figure\nfrom daptq_ros.policy import x\n"),
    ("evidence/x.py", "def f(out):\n    (out / 'report.md').write_text('|---|')\n"),
    ("commands/x.py", "from daptq_ros.evidence.drift_report import write_report\n"),
    ("cli.py", "import importlib\nimportlib.import_module(f'daptq_ros.commands.{n}')\n"),
    ("__init__.py", "from daptq_ros import __version__\n"),
    ("quant/x.py", '"""| simulated | packed |\n|---|---|\nsee docs/performance.md"""\n'),
    ("drift/x.py", "def f():\n    '''Writes nothing to report.md.'''\n    return 'no |-- table'\n"),
    ("drift/x.py", "NOTE = 'see docs/performance.md for the numbers'\n"),
]


@pytest.mark.parametrize(("relpath", "source", "message"), BROKEN)
def test_the_checker_reports_a_broken_rule(relpath, source, message):
    violations = check_module(source, relpath)
    assert len(violations) == 1, violations
    assert message in violations[0]
    if "\n" in source.strip() and "import importlib" not in source:
        assert f"{relpath}:2:" in violations[0]  # the line inside the function


@pytest.mark.parametrize(("relpath", "source"), KEPT)
def test_the_checker_accepts_what_the_rules_allow(relpath, source):
    assert check_module(source, relpath) == []
