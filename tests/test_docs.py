"""Every ```python block of README.md and docs/*.md runs as shown: a file's blocks in order, as one script, from
the repository root, in a fresh process (numerics tier: the emulator here, the GPU in the gpu tier). A block whose
first line is `# gpu` needs a real GPU (torch CUDA tensors, sizes the emulator would take hours on): it runs in
the gpu tier only, and no later block may depend on it. The README's test command is .ci/run's (host tier)."""
import glob
import os
import re
import subprocess
import sys

import pytest

from tkn.ptx import SIM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
GPU_MARK = "# gpu"


def python_blocks(path):
    """[(first line number, code)] of the ```python blocks of a markdown file."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks, cur, start = [], None, 0
    for i, line in enumerate(lines, 1):
        if cur is None and re.match(r"^```python\s*$", line):
            cur, start = [], i + 1
        elif cur is not None and line.startswith("```"):
            blocks.append((start, "\n".join(cur)))
            cur = None
        elif cur is not None:
            cur.append(line)
    assert cur is None, f"{path}: unclosed ```python block from line {start}"
    return blocks


def needs_gpu(code):
    return code.lstrip().split("\n", 1)[0].strip().lower().startswith(GPU_MARK)


def script(path, gpu):
    """The file's blocks as one script, each preceded by a marker line; and {script line: doc line}."""
    out, where = [], {}
    for start, code in python_blocks(path):
        if needs_gpu(code) and not gpu:
            continue
        out.append(f"print('--- {path}:{start}', flush=True)")
        for j, line in enumerate(code.split("\n")):
            out.append(line)
            where[len(out)] = start + j
    return "\n".join(out) + "\n", where


@pytest.mark.host
def test_blocks_found():
    total = {p: python_blocks(p) for p in DOCS}
    assert len(total["README.md"]) >= 4, total["README.md"]
    assert "docs/tutorial.md" in total and len(total["docs/tutorial.md"]) >= 5
    for p, blocks in total.items():
        for start, code in blocks:
            compile(code, f"{p}:{start}", "exec")       # at least valid Python, in every tier


@pytest.mark.parametrize("path", DOCS)
def test_doc_blocks_run(path, tmp_path):
    gpu = not SIM
    src, where = script(path, gpu)
    if not where:
        pytest.skip(f"{path}: no python blocks for this tier")
    f = tmp_path / (os.path.basename(path).replace(".", "_") + ".py")
    f.write_text(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)      # the checkout's tkn, installed or not (the GPU machine runs from PYTHONPATH)
    r = subprocess.run([sys.executable, str(f)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        lines = [int(m) for m in re.findall(rf'File "{re.escape(str(f))}", line (\d+)', r.stderr)]
        at = f" (at {path}:{where.get(lines[-1], '?')})" if lines else ""
        pytest.fail(f"{path}: a block failed{at}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-4000:]}")


@pytest.mark.host
def test_readme_test_command_is_ci():
    """The README's test command is the one .ci/run runs."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        ci = [line.strip() for line in f if "pytest" in line and not line.lstrip().startswith("#")]
    assert ci, ".ci/run runs no pytest"
    for line in ci:
        cmd = line.replace("python3 ", "python ")
        assert cmd in readme, f"README.md does not show .ci/run's test command:\n{cmd}"


@pytest.mark.host
def test_api_reference_builds(tmp_path):
    """`python -m tkn docs` (pdoc) writes the API reference: the package's exports, ptx's leaves, the kernels.
    Built once, in the native run (it runs pdoc under the simulator itself)."""
    if SIM:
        pytest.skip("built in the native run")
    pytest.importorskip("pdoc")
    r = subprocess.run([sys.executable, "-m", "tkn", "docs", "--out", str(tmp_path)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    top = (tmp_path / "tkn.html").read_text()
    for name in ("rt_fl", "mma_AB", "SharedLayout"):
        assert f'id="{name}"' in top, name
    for page in ("tkn/ptx/wgmma.html", "tkn/kernels/gemm.html", "tkn/templates/lcf.html"):
        assert (tmp_path / page).exists(), page
    assert not (tmp_path / "tkn" / "tkn.html").exists() and not (tmp_path / "tkn" / "cli.html").exists()
