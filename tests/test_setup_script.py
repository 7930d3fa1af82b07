"""scripts/setup.sh, run against stubs: a venv whose python records every `pip` command instead of
installing (and makes an "installed" torch or spconv importable), and an `nvidia-smi` that finds a GPU or
not. Nothing is downloaded and the project's own .venv is not touched."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
SETUP = ROOT / "scripts" / "setup.sh"

STUB_PYTHON = '''#!{real}
"""Stands in for the venv's python: `-m pip ...` is recorded, anything else runs on a site of fakes."""
import json, os, re, sys

REAL, SITE = {real!r}, os.environ["STUB_SITE"]
args = sys.argv[1:]
if args[:2] != ["-m", "pip"]:
    os.execv(REAL, [REAL, "-S", "-P", *args])  # no site-packages: only the fakes in PYTHONPATH
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(args[2:]) + "\\n")
names = [a for i, a in enumerate(args[3:]) if not a.startswith("-") and args[2 + i] != "--index-url"]
names = [re.split(r"[<>=\\[]", a)[0] for a in names]
if "flash-attn" in names and os.environ.get("STUB_FAIL_FLASH_ATTN"):
    sys.exit("ModuleNotFoundError: No module named 'torch'")
for name in names:
    if name == "torch":
        os.makedirs(os.path.join(SITE, "torch"), exist_ok=True)
        with open(os.path.join(SITE, "torch", "__init__.py"), "w") as f:
            f.write({fake_torch!r})
    elif name.startswith("spconv"):
        os.makedirs(os.path.join(SITE, "spconv"), exist_ok=True)
        open(os.path.join(SITE, "spconv", "__init__.py"), "w").close()
        info = os.path.join(SITE, name.replace("-", "_") + "-2.3.8.dist-info")
        os.makedirs(info, exist_ok=True)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\\nName: {{name}}\\nVersion: 2.3.8\\n")
'''

FAKE_TORCH = textwrap.dedent("""\
    import os
    __version__ = "2.13.0"
    class version:
        cuda = os.environ.get("STUB_TORCH_CUDA") or None
    class cuda:
        is_available = staticmethod(lambda: False)
    """)


@pytest.fixture()
def stubs(tmp_path):
    """A fake venv (tmp/venv/bin/python), a site of fake packages the import check needs, a bin folder
    for nvidia-smi; returns run(gpu, **env) -> (completed process, recorded pip argument lists)."""
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    site, bindir, venv = tmp_path / "site", tmp_path / "bin", tmp_path / "venv"
    for mod in ("open3d", "kedro", "earthcrafter"):
        (site / mod).mkdir(parents=True)
        (site / mod / "__init__.py").write_text("")
    bindir.mkdir()
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(STUB_PYTHON.format(real=sys.executable, fake_torch=FAKE_TORCH))
    python.chmod(0o755)
    log = tmp_path / "pip.log"

    def run(gpu: bool, **extra: str):
        smi = bindir / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3'\nexit {0 if gpu else 1}\n")
        smi.chmod(0o755)
        keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
        env = {**keep, "PATH": f"{bindir}:/usr/bin:/bin", "VENV": str(venv), "PYTHON": str(python),
               "EARTHCRAFTER_NO_APT": "1", "STUB_SITE": str(site), "STUB_LOG": str(log),
               "PYTHONPATH": str(site), **extra}  # fmt: skip
        log.write_text("")
        proc = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert (venv / ".installed").exists()
        return proc, [json.loads(line) for line in log.read_text().splitlines()]

    run.site = site
    return run


def _installs(calls, name):
    return [c for c in calls if c[0] == "install" and any(a.split("==")[0].split(">=")[0] == name for a in c)]


def test_gpu_branch(stubs):
    url = "https://download.example/whl/cu128"
    proc, calls = stubs(True, EARTHCRAFTER_GPU="1", TORCH_INDEX_URL=url, STUB_TORCH_CUDA="12.8",
                        STUB_FAIL_FLASH_ATTN="1")  # fmt: skip
    assert _installs(calls, "torch") == [["install", "-q", "torch==2.13.0", "--index-url", url]]
    assert _installs(calls, "spconv-cu126") == [["install", "-q", "spconv-cu126"]]
    assert not _installs(calls, "spconv")  # not the CPU-only build
    assert "installing spconv-cu126" in proc.stdout
    (flash,) = _installs(calls, "flash-attn")
    assert "--no-build-isolation" in flash
    assert _installs(calls, "gsplat")
    assert "WARNING: flash-attn did not build" in proc.stdout  # and the script went on to the end
    assert "ready: torch 2.13.0" in proc.stdout
    order = [c for c in calls if c[0] == "install" and c[-1] != "pip"]
    assert order.index(_installs(calls, "torch")[0]) < order.index(flash)  # flash-attn builds against torch


@pytest.mark.parametrize(("cuda", "dist"), [("12.4", "spconv-cu124"), ("12.5", "spconv-cu124"),
                                            ("12.0", "spconv-cu120"), ("11.8", "spconv-cu118")])  # fmt: skip
def test_gpu_branch_spconv_follows_torchs_cuda_and_torch_version_override(stubs, cuda, dist):
    proc, calls = stubs(True, STUB_TORCH_CUDA=cuda, TORCH_VERSION="2.9.1")
    assert _installs(calls, "torch") == [["install", "-q", "torch==2.9.1"]]
    assert _installs(calls, dist) == [["install", "-q", dist]]
    assert not _installs(calls, "flash-attn") and not _installs(calls, "gsplat")  # no EARTHCRAFTER_GPU


def test_gpu_branch_keeps_an_installed_spconv_and_a_cuda_torch_without_spconv_build_gets_the_cpu_one(stubs):
    _, calls = stubs(True, STUB_TORCH_CUDA="11.7")
    assert _installs(calls, "spconv") == [["install", "-q", "spconv>=2.3"]]  # none for CUDA 11.7
    proc, calls = stubs(True, STUB_TORCH_CUDA="12.8")  # a second run: torch and spconv are there
    assert not _installs(calls, "torch") and not any(c[0] == "install" and "spconv" in " ".join(c) for c in calls)
    assert "WARNING: the installed spconv is its CPU-only build" in proc.stdout


def test_cpu_branch_is_unchanged_and_idempotent(stubs):
    proc, calls = stubs(False, EARTHCRAFTER_GPU="0")
    assert _installs(calls, "torch") == [["install", "-q", "torch==2.13.0"]]
    assert _installs(calls, "spconv") == [["install", "-q", "spconv>=2.3"]]
    assert ["install", "-q", "-e", ".[test]"] in calls
    assert not any("flash-attn" in " ".join(c) or "spconv-cu" in " ".join(c) for c in calls)
    _, calls = stubs(False, TORCH_INDEX_URL="https://download.example/whl/cpu")
    assert not _installs(calls, "torch") and not _installs(calls, "spconv")  # both there already
    shutil.rmtree(stubs.site / "torch")
    _, calls = stubs(False, TORCH_INDEX_URL="https://download.example/whl/cpu")
    assert _installs(calls, "torch") == [["install", "-q", "torch==2.13.0", "--index-url",
                                          "https://download.example/whl/cpu"]]  # fmt: skip
