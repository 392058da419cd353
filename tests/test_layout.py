"""The import graph of paratta/ and ui/ has no circle and keeps its rules (paratta.tools.layout)."""

from __future__ import annotations

from pathlib import Path

from paratta.tools.layout import circles, failures, graph, main


def test_the_project_keeps_every_layout_rule(capsys) -> None:
    assert failures(graph()) == []
    assert main() == 0
    assert "0 failures" in capsys.readouterr().out


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_lazy_relative_import_that_closes_a_circle_is_found(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "paratta/__init__.py": "",
            "paratta/tools/__init__.py": "",
            "paratta/tools/bench.py": "def f():\n    from .report import plan\n",
            "paratta/tools/report.py": "from paratta.tools.bench import f\n",
            "paratta/solver.py": "from .config import X\n",
            "paratta/config.py": "X = 1\n",
            "ui/__init__.py": "",
        },
    )
    edges = graph(tmp_path)
    assert edges["paratta.tools.bench"] == {"paratta.tools.report"}
    assert edges["paratta.solver"] == {"paratta.config"}
    assert circles(edges) == [["paratta.tools.bench", "paratta.tools.report"]]
    assert failures(edges) == ["import circle: paratta.tools.bench <-> paratta.tools.report"]


def test_the_library_importing_the_ui_tools_or_argparse_fails(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "paratta/__init__.py": "",
            "paratta/solver.py": "import argparse\nfrom paratta.tools import cli\n",
            "paratta/tools/__init__.py": "",
            "paratta/tools/cli.py": "import argparse\n",
            "paratta/models/__init__.py": "import gradio as gr\n",
            "ui/__init__.py": "",
        },
    )
    found = failures(graph(tmp_path))
    assert "paratta.solver imports argparse: only paratta.tools parses arguments" in found
    assert "paratta.solver imports paratta.tools.cli: the core never imports the tools" in found
    assert "paratta.models imports gradio: the library never imports the UI" in found
    assert len(found) == 3  # the CLI may parse arguments


def test_a_circle_between_the_core_and_a_subpackage_fails(tmp_path: Path) -> None:
    """No module circle, but the core imports ``parallel`` and ``parallel`` imports the core."""
    files = {
        "paratta/__init__.py": "from .parallel.plan import plan\n",
        "paratta/config.py": "X = 1\n",
        "paratta/evaluate.py": "from .parallel import distributed\n",
        "paratta/parallel/__init__.py": "",
        "paratta/parallel/distributed.py": "import torch\n",
        "paratta/parallel/plan.py": "from paratta.config import X\n",
        "ui/__init__.py": "",
    }
    write(tmp_path, files)
    edges = graph(tmp_path)
    assert circles(edges) == []
    assert failures(edges) == [
        "package circle: core <-> paratta.parallel "
        "(paratta.evaluate -> paratta.parallel.distributed; paratta.parallel.plan -> paratta.config)"
    ]
    write(tmp_path, {"paratta/evaluate.py": "import torch\n"})  # the facade may import both: no failure
    assert failures(graph(tmp_path)) == []
