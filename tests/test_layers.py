"""The layering of docs/architecture.md holds: every import in src/kbai points down (or within its
layer), no units import each other in a circle, and every package or root module has its layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "kbai"
DOC = ROOT / "docs" / "architecture.md"
LAYER_LINE = re.compile(r"^\d+\. \*\*([a-z]+)\*\* — (.+)$")


def layers(doc: str) -> dict[str, int]:
    """Unit name -> layer index (0 = bottom) from the numbered list of docs/architecture.md."""
    out: dict[str, int] = {}
    index = 0
    for line in doc.splitlines():
        match = LAYER_LINE.match(line.strip())
        if match:
            for unit in re.findall(r"`([A-Za-z_]+)`", match.group(2)):
                out[unit] = index
            index += 1
    return out


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kbai"


def imports(src: Path) -> list[tuple[str, int, str]]:
    """(importing module, line, imported kbai module) for every import in the package."""
    found: list[tuple[str, int, str]] = []
    for path in sorted(src.rglob("*.py")):
        if "migrations" in path.relative_to(src).parts:
            continue  # Alembic scripts run alone; they stand on store and import nothing above it
        module = module_name(path, src)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base]) if base else ".".join(anchor)
                # `from kbai.store import audit` imports the unit kbai.store.audit, not the package kbai
                targets = [f"{base}.{alias.name}" for alias in node.names] if base == "kbai" else [base]
            else:
                continue
            found += [(module, node.lineno, t) for t in targets if t == "kbai" or t.startswith("kbai.")]
    return found


def units(src: Path) -> set[str]:
    out = {"kbai"}
    for child in src.iterdir():
        if child.is_dir() and (child / "__init__.py").exists():
            out.add(child.name)
        elif child.suffix == ".py" and child.name != "__init__.py":
            out.add(child.stem)
    return out


def violations(src: Path, doc: str) -> list[str]:
    layer = layers(doc)
    problems = [
        f"{unit} (src/kbai/{unit}) has no layer in docs/architecture.md" for unit in sorted(units(src) - set(layer))
    ]
    graph: dict[str, set[str]] = {}
    for module, line, target in imports(src):
        source, dest = unit_of(module), unit_of(target)
        if dest == "__version__":  # `from kbai import __version__` is the package itself
            dest = "kbai"
        if source == dest or source not in layer or dest not in layer:
            continue
        graph.setdefault(source, set()).add(dest)
        if layer[dest] > layer[source]:
            problems.append(
                f"{module} (line {line}) imports {target}: layer {layer[dest] + 1} ({dest}) is above "
                f"layer {layer[source] + 1} ({source})"
            )
    problems += [f"import cycle between units: {' -> '.join(cycle)}" for cycle in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    seen: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            cycle = path[path.index(node) :] + [node]
            if sorted(cycle[:-1]) not in [sorted(c[:-1]) for c in found]:
                found.append(cycle)
            return
        if node in seen:
            return
        for nxt in sorted(graph.get(node, ())):
            walk(nxt, [*path, node])
        seen.add(node)

    for start in sorted(graph):
        walk(start, [])
    return found


def test_every_import_points_down_and_no_unit_is_in_a_cycle() -> None:
    problems = violations(SRC, DOC.read_text())
    assert not problems, "\n".join(problems)


def test_the_layer_list_is_read_from_the_doc() -> None:
    layer = layers(DOC.read_text())
    assert layer["tokenformat"] == 0
    assert layer["store"] < layer["delivery"] < layer["access"] < layer["tokens"] < layer["lifecycle"]
    assert layer["web"] < layer["gateway"] < layer["app"] < layer["cli"]


def write(tree: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tree / "kbai" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tree / "kbai"


DOC_SAMPLE = "1. **foundation** — `errors`, `kbai`\n2. **store** — `store`\n3. **tokens** — `tokens`\n"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"store/__init__.py": "from kbai.tokens.service import x\n", "tokens/service.py": "x = 1\n"},
            "kbai.store (line 1) imports kbai.tokens.service: layer 3 (tokens) is above layer 2 (store)",
        ),
        (
            {"errors.py": "def f():\n    from kbai import store\n"},
            "kbai.errors (line 2) imports kbai.store: layer 2 (store) is above layer 1 (errors)",
        ),
        ({"mystery.py": ""}, "mystery (src/kbai/mystery) has no layer in docs/architecture.md"),
        (
            {"tokens/a.py": "from kbai.store import b\n", "store/b.py": "from kbai.tokens import a\n"},
            "import cycle between units: store -> tokens -> store",
        ),
    ],
)
def test_a_wrong_import_is_named(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    base = {"__init__.py": "", "errors.py": "", "store/__init__.py": "", "tokens/__init__.py": ""}
    src = write(tmp_path, {**base, **files})
    assert expected in violations(src, DOC_SAMPLE)


def test_a_downward_import_passes(tmp_path: Path) -> None:
    src = write(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "store/__init__.py": "from kbai import errors\n",
            "tokens/__init__.py": "from kbai.store import x\nfrom . import y\n",
        },
    )
    assert violations(src, DOC_SAMPLE) == []
