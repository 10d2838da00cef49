"""Speed-up and fidelity against merged fraction, per family of variants (a PNG for BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

FAMILIES = {
    "ca_tome": ("CA-ToMe, no cache (threshold sweep)", "o-"),
    "ratio": ("ours, fixed ratio, no cache", "s-"),
    "ratio_cached": ("ours, fixed ratio, cached steps", "s--"),
    "builtin": ("ComfyUI TomePatchModel (q only)", "^-"),
}


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed, fidelity = result["speed"], result["fidelity"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for family, (label, style) in FAMILIES.items():
        rows = sorted((r["merged_fraction"], r["speedup"], name) for name, r in speed.items()
                      if r["family"] == family and r["merged_fraction"] is not None)
        if family == "builtin":  # the built-in node reports nothing: it merges int(ratio·N) tokens
            rows = sorted((r["amount"], r["speedup"], name) for name, r in speed.items() if r["family"] == family)
        if rows:
            left.plot([100 * f for f, _, _ in rows], [s for _, s, _ in rows], style, label=label)
            points = [(fidelity[name]["merged_fraction"], fidelity[name]["ssim"])
                      for f, _, name in rows if name in fidelity]
            if points:
                right.plot([100 * f for f, _ in sorted(points)], [s for _, s in sorted(points)], style, label=label)
    for name, row in speed.items():
        if row["family"] == "ceiling":
            left.axhline(row["speedup"], color="grey", linestyle=":", linewidth=1)
            left.annotate(name.replace("ceiling: ", ""), (1, row["speedup"]), fontsize=8, color="grey")
    left.set(xlabel="merged tokens of the top-level self-attention (%)", ylabel="speed-up vs unpatched (per step)",
             title=f"speed, {result['size']}px, CPU")
    right.set(xlabel="merged tokens (%)", ylabel="SSIM to the unpatched image (same seed)",
              title=f"fidelity, {result['fidelity_size']}px, {result['fidelity_steps']} steps")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path
