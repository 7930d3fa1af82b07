"""Assemble docs/benchmarks.md from the per-area benchmark pages (docs/bench_*.md)."""

from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
ORDER = ["world", "import", "meshing", "voxelize", "sparse", "render", "structvae", "texvae", "flows", "paper"]

HEADER = """# Benchmarks

Measured by the scripts in `benchmarks/` (each takes `--help`). Unless a section says otherwise the
machine is a 2-core x86_64 CPU with 24 GB of memory and no GPU, shared with other jobs while these
ran: read the ratios against the baseline run side by side in the same process, not the absolute
seconds. GPU sections are filled in only from runs on a GPU.

This page is assembled from the per-area pages by `python scripts/collect_benchmarks.py`.
The importers' and meshing figures live with their user docs (`docs/data_import.md`,
`docs/meshing.md`), and the models' training throughput with the models (`docs/structvae.md`,
`docs/texvae.md`).
"""


def main() -> None:
    parts = [HEADER]
    pages = sorted(DOCS.glob("bench_*.md"), key=lambda p: (ORDER.index(p.stem[6:]) if p.stem[6:] in ORDER else 99, p.name))
    for page in pages:
        text = page.read_text().strip()
        # demote the page's headings one level under this page's title
        text = "\n".join("#" + line if line.startswith("#") else line for line in text.splitlines())
        parts.append(f"<!-- from {page.name} -->\n{text}\n")
    (DOCS / "benchmarks.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
