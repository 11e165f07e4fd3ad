"""Tables and plots of bench results files.

A results file (bench/common.py's `write`) is {"device", "date", "unit", "method", "records": [...]}, each record
{"shape": {"M": ..., ...}, "tkn": x, "baselines": {"cublas": y, ...}} or, for kernels with a backward pass,
{"shape": {...}, "fwd": {"tkn": x, "baselines": {...}}, "bwd": {...}} (any such sub-dicts). Other keys are kept
in the file and ignored here.

    python bench/plot.py bench/results/gemm.json [...]        # writes gemm.png beside each, prints the table
"""
import json
import os
import sys


def _passes(record):
    """[(pass name or None, {"tkn": x, "baselines": {...}})] of one record."""
    if "tkn" in record:
        return [(None, record)]
    return [(k, v) for k, v in record.items() if isinstance(v, dict) and "tkn" in v]


def shape_label(shape):
    """'4096 x 4096 x 4096' (values in the record's order), or the keys too where they are not M, N, K."""
    if list(shape) in (["M", "N", "K"], ["M", "N"], ["N"]):
        return " x ".join(str(v) for v in shape.values())
    return " ".join(f"{k}={v}" for k, v in shape.items())


def series(results):
    """{pass name or None: {implementation: [value or None per record]}}, and the shape labels."""
    labels = [shape_label(r.get("shape", {})) for r in results["records"]]
    out = {}
    for i, r in enumerate(results["records"]):
        for name, p in _passes(r):
            impls = out.setdefault(name, {})
            for impl, v in [("tkn", p["tkn"])] + list(p.get("baselines", {}).items()):
                impls.setdefault(impl, [None] * len(labels))[i] = v
    return out, labels


def markdown(results, title=None):
    """A markdown table: per shape (and pass), tkn, each baseline, and tkn / baseline."""
    unit = results.get("unit", "")
    rows, bases = [], []
    for r in results["records"]:
        for _, p in _passes(r):
            for b in p.get("baselines", {}):
                if b not in bases:
                    bases.append(b)
    has_pass = any(name for r in results["records"] for name, _ in _passes(r))
    head = (["shape"] + (["pass"] if has_pass else []) + [f"tkn ({unit})"]
            + [c for b in bases for c in (b, f"tkn / {b}")])
    for r in results["records"]:
        for name, p in _passes(r):
            row = [shape_label(r.get("shape", {}))] + ([name or ""] if has_pass else []) + [_num(p["tkn"])]
            for b in bases:
                v = p.get("baselines", {}).get(b)
                row += [_num(v), f"{p['tkn'] / v:.2f}" if v and p["tkn"] is not None else ""]
            rows.append(row)
    about = ", ".join(str(results[k]) for k in ("device", "date") if results.get(k))
    lines = [(f"**{title}** " if title else "") + about] if title or about else []
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _num(v):
    if v is None:
        return ""
    return f"{v:.1f}" if isinstance(v, float) else str(v)


def plot(results, path, title=None):
    """A PNG of throughput against size (one line per implementation, a panel per pass); returns path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data, labels = series(results)
    fig, axes = plt.subplots(1, len(data), figsize=(max(6.0, 0.55 * len(labels) + 3) * len(data), 4.8),
                             squeeze=False)
    x = list(range(len(labels)))
    for ax, (name, impls) in zip(axes[0], data.items()):
        for impl, ys in impls.items():
            pts = [(i, y) for i, y in zip(x, ys) if y is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", lw=2 if impl == "tkn" else 1.3,
                        label=impl)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(results.get("unit", ""))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if name:
            ax.set_title(name)
    fig.suptitle(title or f"{os.path.splitext(os.path.basename(path))[0]}: {results.get('device', '')} "
                          f"{results.get('date', '')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(paths):
    for p in paths:
        with open(p) as f:
            res = json.load(f)
        print(markdown(res, os.path.basename(p)))
        print("plot:", plot(res, os.path.splitext(p)[0] + ".png"))


if __name__ == "__main__":
    if not sys.argv[1:]:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1:])
