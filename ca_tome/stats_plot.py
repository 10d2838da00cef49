"""The Stats node's picture: merged fraction, pair drift (Jaccard) and similarity histogram.

matplotlib is imported when a plot is drawn, so the engine never needs it.
"""

from __future__ import annotations

import numpy as np

from .stats import HISTOGRAM_BINS


def _block_name(key) -> str:
    kind, index, sub = key.block
    chunks = "+".join("uncond" if c == 1 else "cond" for c in key.batch[0]) or "batch"
    return f"{kind} {index}.{sub} ({chunks})"


def stats_figure(report, threshold: float | None, width: int = 1500, height: int = 450) -> np.ndarray:
    """An RGB uint8 [height, width, 3] image of a RunReport (and its StepStats when recorded)."""
    try:
        import matplotlib
    except ImportError as error:
        raise RuntimeError("CA-ToMe Stats draws with matplotlib, which is not installed: run "
                           "`pip install -r requirements.txt` in this pack's folder with ComfyUI's Python") from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (merged_ax, drift_ax, hist_ax) = plt.subplots(1, 3, figsize=(width / 100, height / 100), dpi=100)
    per_block: dict[str, dict[int, float]] = {}
    for event in report.events:
        per_block.setdefault(_block_name(event.key), {}).setdefault(event.step, event.merged / event.tokens)
    for name, steps in sorted(per_block.items()):
        merged_ax.plot(list(steps), [100 * f for f in steps.values()], marker=".", label=name)
    merged_ax.set(title="merged tokens per step", xlabel="step", ylabel="% of the block's tokens", ylim=(0, 100))
    merged_ax.legend(fontsize=6)

    recomputed = report.recomputed_steps
    for step in recomputed:
        drift_ax.axvline(step, color="tab:red", alpha=0.25, linewidth=2)
    if report.stats:
        drift: dict[str, dict[int, float]] = {}
        for record in report.stats:
            if record.jaccard is not None:
                drift.setdefault(_block_name(record.key), {})[record.step] = record.jaccard
        for name, steps in sorted(drift.items()):
            drift_ax.plot(list(steps), list(steps.values()), marker=".", label=name)
        drift_ax.set_title("Jaccard distance of fresh pairs to the previous step\n(red: pairs recomputed)", fontsize=9)
    else:
        drift_ax.set_title("pairs recomputed at the red steps\n(record_stats off: no Jaccard distance)", fontsize=9)
    drift_ax.set(xlabel="step", ylabel="Jaccard distance", ylim=(0, 1), xlim=(-0.5, report.steps - 0.5))

    edges = np.linspace(-1, 1, HISTOGRAM_BINS + 1)
    if report.stats:
        counts = np.sum([record.histogram for record in report.stats], axis=0)
        hist_ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue")
        hist_ax.set_title("similarity of each src token to its best dst (all steps)", fontsize=9)
    else:
        hist_ax.set_title("similarity histogram needs record_stats on", fontsize=9)
    if threshold is not None:
        hist_ax.axvline(threshold, color="tab:red", label=f"threshold {threshold:g}")
        hist_ax.legend(fontsize=8)
    hist_ax.set(xlabel="cosine similarity", ylabel="src tokens")

    figure.tight_layout()
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return image
