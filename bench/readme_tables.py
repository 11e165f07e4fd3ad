"""The README's attention and memory-bound tables, rendered from bench/results/*.json (so they are never pasted
by hand).   python bench/readme_tables.py [results_dir]"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load(d, name):
    path = os.path.join(d, name + ".json")
    return json.load(open(path)) if os.path.exists(path) else None


def cell(x, fmt="{:.0f}"):
    return fmt.format(x) if isinstance(x, (int, float)) else ""


def ratio(p, names):
    best = max((p["baselines"].get(n) or 0 for n in names), default=0)
    return cell(p["tkn"] / best, "{:.2f}") if p.get("tkn") and best else ""


def attention(d):
    a = load(d, "attention")
    if a is None:
        return ""
    names = ("cudnn", "fa2", "fa4")
    out = ["| N | D | causal | fwd tkn | cuDNN | FA2 | FA4 | ratio | bwd tkn | cuDNN | FA2 | FA4 | ratio |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in a["records"]:
        s = r["shape"]
        tag = ("yes" if s["causal"] else "") + (f" GQA {s['H'] // s['Hkv']}:1" if s.get("Hkv", s["H"]) != s["H"]
                                                 else "") + (" varlen" if s.get("varlen") else "")
        row = [str(s["N"]), str(s["D"]), tag]
        for ph in ("fwd", "bwd"):
            p = r.get(ph) or {"baselines": {}}
            row += [cell(p.get("tkn"))] + [cell(p["baselines"].get(n)) for n in names] + [ratio(p, ("cudnn", "fa4"))]
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def memory_bound(d):
    out = ["| kernel | shape | fwd tkn | copy | best other | x copy | bwd tkn | copy | best other | x copy |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("layernorm", "rmsnorm", "rotary"):
        res = load(d, name)
        for r in (res or {}).get("records", []):
            s = r["shape"]
            shape = f"hidden {s['hidden']}" if "hidden" in s else "x".join(str(s[k]) for k in ("B", "H", "N", "D"))
            row = [name if name != "rotary" else "rotary q, k", shape]
            for ph in ("fwd", "bwd"):
                p = r.get(ph) or {"baselines": {}}
                b = p["baselines"]
                best = max((v for k, v in b.items() if k != "copy" and v), default=None)
                row += [cell(p.get("tkn")), cell(b.get("copy")), cell(best),
                        cell(p["tkn"] / b["copy"], "{:.2f}") if p.get("tkn") and b.get("copy") else ""]
            out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results")
    print(attention(d))
    print()
    print(memory_bound(d))
