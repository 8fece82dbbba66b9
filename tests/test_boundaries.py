"""Package boundaries: product code (app/, workers/) never depends on the sandbox.

The sandbox is a stand-in for fal used by the tests, the benchmarks and `videojobs up`
without a FAL_KEY. Only the one-process runner starts it, importing it inside the function
that does so; nothing else in the product may import it, so a deployment never runs it by
accident and the product cannot grow to rely on it. The other direction is allowed: the
sandbox reuses product definitions where both sides must agree (the signed webhook message).
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from app.fal_webhooks import webhook_message

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("app", "workers")
RUNNER = "app/oneprocess.py"  # starts the sandbox for `videojobs up` (lazily)
SANDBOX = "sandbox"


def _names_sandbox(module: str | None) -> bool:
    return module is not None and (module == SANDBOX or module.startswith(SANDBOX + "."))


def sandbox_imports(source: str) -> list[tuple[int, bool]]:
    """(line, inside a function) for every import of the sandbox package in `source`,
    including `importlib.import_module("sandbox...")` and `__import__("sandbox...")`."""
    found: list[tuple[int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                if any(_names_sandbox(alias.name) for alias in child.names):
                    found.append((child.lineno, in_function))
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0 and _names_sandbox(child.module):
                    found.append((child.lineno, in_function))
            elif isinstance(child, ast.Call) and child.args:
                func = child.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                first = child.args[0]
                if (name in ("import_module", "__import__") and isinstance(first, ast.Constant)
                        and isinstance(first.value, str) and _names_sandbox(first.value)):
                    found.append((child.lineno, in_function))
            visit(child, nested)

    visit(ast.parse(source), False)
    return found


def product_files() -> list[Path]:
    return sorted(path for package in PRODUCT for path in (ROOT / package).rglob("*.py"))


def test_the_checker_sees_every_kind_of_import() -> None:
    source = (
        "import sandbox\n"
        "from sandbox.provider import SandboxProvider\n"
        "import importlib\n"
        "def start():\n"
        "    from sandbox import SandboxProvider\n"
        "    importlib.import_module('sandbox.jobs')\n"
        "from app import sandboxes\n"  # a different name: not the sandbox
        "from .sandbox import x\n"  # relative: a module of the same package
    )
    assert sandbox_imports(source) == [(1, False), (2, False), (5, True), (6, True)]


def test_product_code_never_imports_the_sandbox() -> None:
    files = product_files()
    assert len(files) > 20  # the walk found the packages
    offenders = []
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        for line, in_function in sandbox_imports(path.read_text()):
            if not (relative == RUNNER and in_function):
                offenders.append(f"{relative}:{line}")
    assert offenders == [], (
        "product code imports the sandbox; only the one-process runner may, inside the "
        f"function that starts it: {offenders}")


def test_the_signed_webhook_message_is_fals_format() -> None:
    """Both sides use this one definition, so pin it to fal's documented format here."""
    body = b'{"status": "OK"}'
    assert webhook_message("req-1", "user-1", 1700000000, body) == (
        b"req-1\nuser-1\n1700000000\n" + hashlib.sha256(body).hexdigest().encode())
    from sandbox.signing import webhook_message as signed_by_the_sandbox

    assert signed_by_the_sandbox is webhook_message
