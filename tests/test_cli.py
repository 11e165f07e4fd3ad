"""`python -m tkn`: verbs, --help, exit codes (0 ok, 1 failure, 2 usage), the demo (emulator or GPU), sass (no GPU),
info, bench's refusal without a GPU and its plot/table helper, and the no-GPU error message."""
import json
import os
import re
import subprocess
import sys

import pytest

from tkn.ptx import SIM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _driver_present():
    try:
        from cuda.bindings import driver as cu
        return cu.cuInit(0)[0] == cu.CUresult.CUDA_SUCCESS
    except Exception:
        return False


def tkn_cli(*args, sim=None, timeout=300, cwd=ROOT):
    """Run `python -m tkn args` in a fresh process; sim: True / False sets or removes NUMBA_ENABLE_CUDASIM,
    None inherits this process's."""
    env = dict(os.environ)
    if sim is True:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    elif sim is False:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    return subprocess.run([sys.executable, *(args if args[:1] == ("-X",) else ("-m", "tkn", *args))], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------- host tier: the CLI
@pytest.mark.host
def test_help_does_not_import_numba():
    r = tkn_cli("-X", "importtime", "-m", "tkn", "--help")
    assert r.returncode == 0, r.stderr
    for verb in ("demo", "info", "bench", "sass", "docs"):
        assert verb in r.stdout
    mods = [line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    heavy = [m for m in mods if m.split(".")[0] in ("numba", "numba_cuda", "torch", "cupy", "matplotlib")]
    assert not heavy, f"--help imported {heavy[:5]}"


@pytest.mark.host
@pytest.mark.parametrize("verb", ["demo", "info", "bench", "sass", "docs"])
def test_every_verb_has_help(verb):
    from tkn import cli
    with pytest.raises(SystemExit) as e:
        cli.main([verb, "--help"])
    assert e.value.code == 0


@pytest.mark.host
@pytest.mark.parametrize("argv", [[], ["nonsense"], ["demo", "--seed", "x"], ["sass", "no_such_kernel"],
                                  ["demo", "no_such_entry"], ["sass", "gemm", "gemm_fp8", "--ptx"],
                                  ["sass", "gemm", "--ptx", "--sass"]])
def test_usage_errors_exit_2(argv, capsys):
    from tkn import cli
    try:
        code = cli.main(argv)
    except SystemExit as e:          # argparse's own usage errors
        code = e.code
    assert code == 2, (argv, capsys.readouterr())


@pytest.mark.host
def test_lists(capsys):
    from tkn import cli
    assert cli.main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    assert "gemm" in out and "gemm_fp8" in out
    assert cli.main(["sass", "--list"]) == 0
    out = capsys.readouterr().out
    assert "gemm_abt" in out and "gemm_fp8" in out
    assert cli.main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^gemm\s", out, re.M) and re.search(r"^gemm_fp8\s", out, re.M), out


@pytest.mark.host
def test_bench_discovers_scripts_with_run():
    from tkn import cli
    found = cli.bench_scripts(os.path.join(ROOT, "bench"))
    assert {"gemm", "gemm_fp8"} <= set(found), found
    assert "common" not in found and "plot" not in found


@pytest.mark.host
def test_bench_refuses_without_a_gpu():
    if _driver_present():
        pytest.skip("a GPU is here: bench would run")
    r = tkn_cli("bench", "gemm", sim=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "GPU" in r.stderr or "torch" in r.stderr, r.stderr
    r = tkn_cli("bench", "gemm", sim=True)
    assert r.returncode == 1 and "NUMBA_ENABLE_CUDASIM" in r.stderr, r.stderr


@pytest.mark.host
def test_plot_and_table(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import plot
    finally:
        sys.path.pop(0)
    res = {"device": "test", "date": "2026-01-01", "unit": "TFLOP/s", "method": "made up",
           "records": [{"shape": {"M": 64 * i, "N": 64, "K": 64}, "tkn": 10.0 * i, "baselines": {"cublas": 20.0 * i}}
                       for i in (1, 2, 3)]}
    table = plot.markdown(res)
    assert "| 64 x 64 x 64 | 10.0 | 20.0 | 0.50 |" in table, table
    fb = {"device": "test", "unit": "TFLOP/s",
          "records": [{"shape": {"B": 1, "N": n}, "fwd": {"tkn": 1.0, "baselines": {"sdpa": 2.0}},
                       "bwd": {"tkn": 3.0, "baselines": {"sdpa": 3.0}}} for n in (128, 256)]}
    table = plot.markdown(fb)
    assert "| B=1 N=128 | fwd | 1.0 | 2.0 | 0.50 |" in table and "| B=1 N=256 | bwd | 3.0 | 3.0 | 1.00 |" in table
    pytest.importorskip("matplotlib")
    for r, name in ((res, "a.png"), (fb, "b.png")):
        p = plot.plot(r, str(tmp_path / name))
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(res))
    plot.main([str(path)])
    assert (tmp_path / "c.png").exists()


@pytest.mark.host
def test_no_gpu_error_says_how_to_use_the_emulator():
    """Without a GPU and without the simulator, device calls raise numba's CudaSupportError with tkn's message
    (the library, through tkn.kernels, and plain numba calls in a script that imported tkn)."""
    if _driver_present():
        pytest.skip("a GPU driver is here")
    code = {"library": "import numpy as np\nfrom tkn.kernels import gemm\n"
                       "gemm(np.zeros((64, 64), np.uint16), np.zeros((64, 64), np.uint16))",
            "script": "import numpy as np, tkn\nfrom numba import cuda\n@tkn.kernel\ndef k(x):\n    pass\n"
                      "k[1, 32](cuda.to_device(np.zeros(4)))",
            "launch": "import numpy as np\nfrom tkn.launch import Kernel\nfrom numba import cuda\n"
                      "cuda.device_array(4)"}
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    for what, src in code.items():
        r = subprocess.run([sys.executable, "-c", src], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode != 0, what
        err = r.stderr.strip().splitlines()
        assert "no GPU found" in r.stderr and "NUMBA_ENABLE_CUDASIM=1" in r.stderr, (what, err[-6:])


# ------------------------------------------------------------------------------------ sass tier (no GPU needed)
@pytest.mark.sass
def test_sass_gemm_summary(capsys):
    from tkn import cli
    assert cli.main(["sass", "gemm"]) == 0
    out = capsys.readouterr().out
    regs = int(re.search(r"registers per thread: (\d+)", out).group(1))
    assert 0 < regs <= 168, out                        # 384 threads a block: 65536 / 384 rounded down to 8
    assert re.search(r"HGMMA\s+\d+", out) and re.search(r"UTMALDG\s+\d+", out), out
    assert "spills: none" in out and "dynamic shared memory" in out, out
    assert "HGMMA.64x256x16.F32.BF16" in out


@pytest.mark.sass
def test_sass_listings(capsys):
    from tkn import cli
    assert cli.main(["sass", "gemm_one_warp", "--ptx"]) == 0
    assert "mma.sync.aligned.m16n8k16" in capsys.readouterr().out
    assert cli.main(["sass", "gemm_fp8", "--sass"]) == 0
    assert "QGMMA.64x256x32.F32.E4M3.E4M3" in capsys.readouterr().out


@pytest.mark.sass
def test_cubin_resources_follow_max_registers():
    """The register count read from the cubin is what ptxas was held to: 1024 threads a block (launch bounds)
    leave 64 registers a thread; 32 threads leave up to 255. (tkn.sass passes max_registers to cuda.compile,
    which takes no such option: launch bounds it is.)"""
    from numba.cuda import types as nt
    import tkn
    import tkn.sass as S
    from tkn import cli

    def body(out, a):
        t = tkn.rt_fl(32, 64)
        tkn.load(t, a, (0, 0))
        tkn.exp(t, t)
        tkn.store(out, t, (0, 0))
    sig = (nt.float32[:, ::1], nt.float32[:, ::1])
    regs = {}
    for threads in (1024, 32):
        k = tkn.kernel(threads=threads)(body)
        (r,) = cli.cubin_resources(S.link_cubin(S.compile_ltoir(k, sig))).values()
        regs[threads] = r["registers"]
    assert 0 < regs[1024] <= 64 < regs[32] <= 255, regs     # 64 f32 a lane in the tile alone


@pytest.mark.sass
def test_info():
    r = tkn_cli("info", sim=False)
    out = r.stdout
    for word in ("numba-cuda", "NVVM", "nvJitLink", "cache:", "sm_90a: OK", "diagnosis"):
        assert word in out, out
    assert r.returncode == 0, out + r.stderr
    if not _driver_present():
        assert "no GPU here" in out


# ------------------------------------------------------------------------------ numerics tier (emulator or GPU)
def test_demo():
    """The whole demo, in a fresh process: on the emulator here, on the GPU in the gpu tier (with cuBLAS)."""
    r = tkn_cli("demo", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    n = len(__import__("tkn.cli").cli.DEMOS)
    assert f"{n} passed, 0 failed" in r.stdout or ", 0 failed" in r.stdout, r.stdout
    assert r.stdout.count("PASS") >= n - 1, r.stdout
    assert ("CPU emulator" in r.stdout) == SIM
    if not SIM and "torch not installed" not in r.stdout:
        assert "speed: tkn" in r.stdout, r.stdout


def test_demo_failures_exit_1(monkeypatch, capsys):
    if not SIM:
        pytest.skip("in-process: the emulator tier runs it")
    from tkn import cli
    monkeypatch.setenv("NUMBA_ENABLE_CUDASIM", "1")
    entries = []
    for name, run in [("good", lambda ctx: [cli.Check("ok", 1e-4, 1e-2)]),
                      ("bad", lambda ctx: [cli.Check("big", 0.5, 1e-2)]),
                      ("nan", lambda ctx: [cli.Check("nan", float("nan"), 1e-2)]),
                      ("raises", lambda ctx: 1 / 0),
                      ("skip", lambda ctx: (_ for _ in ()).throw(cli.Skip("not here")))]:
        entries.append(cli.Demo(name, name, ("line",), run))
    monkeypatch.setattr(cli, "DEMOS", entries)
    assert cli.main(["demo", "--seed", "1"]) == 1
    out = capsys.readouterr().out
    assert "1 passed, 3 failed, 1 skipped" in out, out
    assert "ZeroDivisionError" in out and "skipped: not here" in out
    assert cli.main(["demo", "good", "skip"]) == 0
