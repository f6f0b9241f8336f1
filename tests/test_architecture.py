"""The layers of docs/architecture.md hold: every import points down, and nothing loops."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Top to bottom. A module may import modules of lower layers only; inside a package listed
# in SIDEWAYS its modules may also import each other (flows.by_id uses flows.runs).
LAYERS = [
    {"archiver.__main__"},
    {"archiver.cli"},
    {"archiver.flows"},
    {"archiver.client", "archiver.parse", "archiver.store", "archiver.payloads", "archiver.sandbox"},
    {"archiver.database"},
    {"archiver.dialect", "archiver.models"},
    {"archiver.records", "archiver.schema_docs", "archiver.sqltypes", "archiver.config", "archiver.anomaly"},
    {"archiver.errors", "archiver.jsonio", "archiver.fields", "archiver.utc", "archiver.textsafe",
     "archiver.errortext", "archiver.collector", "archiver"},
]
SIDEWAYS = ("archiver.flows", "archiver.sandbox")
# errortext: migration 0010 computes jobs.error_signature as the writes do (a frozen copy could drift)
MIGRATIONS_MAY_IMPORT = {"archiver.database", "archiver.dialect", "archiver.models", "archiver.sqltypes",
                         "archiver.config", "archiver.errortext"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def archiver_imports(path: Path, module: str | None = None) -> set[str]:
    """Every archiver module `path` imports, at the top or inside a function."""
    here = (module or module_name(path)).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            found.add(".".join(base + ([node.module] if node.module else [])))
        elif isinstance(node, ast.ImportFrom) and node.module == "archiver":
            found |= {f"archiver.{a.name}" if a.name != "__version__" else "archiver" for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("archiver."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("archiver")}
    return found


def layer_of(module: str) -> int:
    for depth, layer in enumerate(LAYERS):
        if module in layer or any(module.startswith(p + ".") for p in layer if p in SIDEWAYS):
            return depth
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to docs/architecture.md")


def package_of(module: str) -> str | None:
    return next((p for p in SIDEWAYS if module == p or module.startswith(p + ".")), None)


def graph() -> dict[str, set[str]]:
    return {module_name(p): archiver_imports(p) for p in sorted((ROOT / "archiver").rglob("*.py"))}


def imports_not_pointing_down(edges: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, imports in edges.items():
        for target in imports:
            down = layer_of(target) > layer_of(module)
            sideways = package_of(module) is not None and package_of(module) == package_of(target)
            if not (down or sideways):
                wrong.append(f"{module} imports {target}")
    return wrong


def test_every_import_points_down():
    assert imports_not_pointing_down(graph()) == []


def test_no_import_cycle():
    edges = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join(path + [module])
        state[module] = "open"
        for target in edges.get(module, ()):
            visit(target, path + [module])
        state[module] = "done"

    for module in edges:
        visit(module, [])


def test_migrations_import_only_the_database_layer_and_models():
    files = [ROOT / "migrations" / "env.py", *sorted((ROOT / "migrations" / "versions").glob("0*.py"))]
    used = {target for f in files for target in archiver_imports(f)}
    assert used <= MIGRATIONS_MAY_IMPORT, used - MIGRATIONS_MAY_IMPORT


def test_the_layer_check_sees_an_upward_import(tmp_path):
    """The checker itself: fields.py importing the store (a layer up) is reported."""
    probe = tmp_path / "fields.py"
    probe.write_text((ROOT / "archiver" / "fields.py").read_text() + "\nfrom archiver.store import Archive\n")
    edges = graph() | {"archiver.fields": archiver_imports(probe, "archiver.fields")}
    assert imports_not_pointing_down(edges) == ["archiver.fields imports archiver.store"]


def test_commands_start_without_the_orm_or_alembic():
    """Every cron run pays its imports: the ORM (the tables are Core, archiver.models) and
    Alembic (only a schema change needs it) stay out of a command's start-up."""
    import subprocess
    import sys
    code = ("import sys, archiver.cli, archiver.flows.report_html, archiver.flows.health, archiver.flows.incremental; "
            "print(sorted(m for m in ('sqlalchemy.orm', 'alembic') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
