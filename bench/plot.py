"""Draw the results of ``python -m cnn.bench --json PATH`` as bar charts.

    python bench/plot.py results.json [-o bench.png]

Left: throughput of the whole-model cases (images/s, higher is better). Right: GFLOP/s of the
kernel cases. One bar per backend (cnn, torch, reference); skipped backends get no bar.
Needs matplotlib (``pip install '.[plot]'``).
"""
import argparse
import json

BACKENDS = ("cnn", "torch", "reference")
COLORS = {"cnn": "#1f77b4", "torch": "#ff7f0e", "reference": "#7f7f7f"}


def _bars(ax, cases, key, title, ylabel):
    import numpy as np
    width = 0.8 / len(BACKENDS)
    x = np.arange(len(cases))
    for i, b in enumerate(BACKENDS):
        values = [c["results"].get(b, {}).get(key) or 0.0 for c in cases]
        if not any(values):
            continue
        ax.bar(x + (i - 1) * width, values, width, label=b, color=COLORS[b])
    ax.set_xticks(x)
    ax.set_xticklabels([c["name"] for c in cases], rotation=60, ha="right", fontsize=7)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", help="a file written by python -m cnn.bench --json")
    p.add_argument("-o", "--output", default="bench.png", help="image to write (default bench.png)")
    args = p.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(args.json) as fh:
        doc = json.load(fh)
    cases = doc["cases"]
    models = [c for c in cases if c["kind"] in ("train_step", "predict")]
    kernels = [c for c in cases if c["kind"].startswith(("conv", "pool"))]
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    _bars(axes[0], models, "images_per_s", "Whole model", "images / s")
    _bars(axes[1], kernels, "gflops", "Kernels", "GFLOP / s")
    m = doc["machine"]
    fig.suptitle(f"cnn.bench, {m['cpu']}, {m['threads']} threads, commit {m.get('git_commit')}"
                 + (" (quick run)" if doc.get("quick") else ""))
    fig.tight_layout()
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
