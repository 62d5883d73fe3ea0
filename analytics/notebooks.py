"""Run the notebooks headless, outputs and plots included, without Jupyter:

    make notebooks                    # every notebook over the lake, into var/notebooks/
    .venv/bin/python -m analytics.notebooks engagement --out var/notebooks

Each notebook runs from the repository root with this process's environment
(``LAKE__ROOT``, ``KAFKA__BOOTSTRAP_SERVERS``…), as the tests run them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# The ones over the lake; ranking_evaluation.ipynb reads ../shared/data/ranking instead.
OVER_THE_LAKE = ("engagement", "generation_ops", "moderation_quality")


def execute(name: str, out_dir: Path | None = None, timeout_s: int = 600) -> Any:
    """Execute ``notebooks/<name>.ipynb``; returns the notebook with its outputs and,
    when ``out_dir`` is given, writes it there too. A cell that raises raises here."""
    import nbclient
    import nbformat

    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, out_dir / f"{name}.ipynb")
    return notebook


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    known = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    ap.add_argument(
        "names", nargs="*", default=list(OVER_THE_LAKE), choices=known, help="notebook names (default: the lake's)"
    )
    ap.add_argument("--out", type=Path, default=Path("var/notebooks"), help="where the executed copies go")
    args = ap.parse_args(argv)
    for name in args.names:
        execute(name, args.out)
        print(f"{args.out / (name + '.ipynb')}: executed, with its plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
