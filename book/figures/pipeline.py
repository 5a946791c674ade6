"""Draws the RobustFT pipeline for the book's introduction: ``python book/figures/pipeline.py``
writes ``pipeline.svg`` beside this file (text kept as text, so the figure stays searchable
and a test can read its labels). Every box names its chapter and the library function."""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# (x, y, width, title, detail, function, chapter, colour)
BOXES = {
    "data": (0.2, 3.0, 2.3, "Noisy SFT data", "questions, options,\ngiven (maybe wrong) labels",
             "load_samples · inject_noise", 1, "#e8eef7"),
    "experts": (3.1, 3.0, 2.6, "Two experts", "direct: score the options\nreasoning: think step by step",
                "run_detection_experts", 3, "#fdf1dc"),
    "checker": (6.3, 3.0, 2.3, "Checker", "both experts agree\nwith the label?",
                "detect_noise", 3, "#fdf1dc"),
    "clean": (9.3, 4.3, 2.0, "Clean set", "labels kept as given", "", None, "#e3f4e1"),
    "cer": (6.3, 0.6, 2.6, "Context-enhanced relabeling", "k nearest clean samples\nas worked examples",
            "relabel · nearest_clean", 4, "#f7e3e3"),
    "review": (3.1, 0.6, 2.6, "Review", "reasoning + CER answers\n→ new label",
               "relabel(review=…)", 4, "#f7e3e3"),
    "select": (0.2, 0.6, 2.3, "Entropy selection", "keep the β most\nconfident relabels",
               "select_by_entropy", 5, "#ece3f7"),
    "train": (9.3, 1.2, 2.0, "Fine-tune", "LoRA / QLoRA on\nclean ∪ selected", "finetune · evaluate", 6, "#e3f4e1"),
}
HEIGHT = 1.6
ARROWS = [("data", "experts", ""), ("experts", "checker", ""), ("checker", "clean", "agree"),
          ("checker", "cer", "potentially noisy"), ("cer", "review", ""), ("review", "select", ""),
          ("clean", "train", ""), ("select", "train", "selected")]


def _anchor(name, side):
    x, y, w = BOXES[name][:3]
    return {"right": (x + w, y + HEIGHT / 2), "left": (x, y + HEIGHT / 2), "top": (x + w / 2, y + HEIGHT),
            "bottom": (x + w / 2, y)}[side]


def draw(path: Path) -> Path:
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "robustft", "font.size": 9})
    fig, ax = plt.subplots(figsize=(11.8, 5.2))
    ax.set_xlim(0, 11.5)
    ax.set_ylim(0.1, 6.2)
    ax.axis("off")
    for name, (x, y, w, title, detail, fn, chapter, colour) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, HEIGHT, boxstyle="round,pad=0.04,rounding_size=0.12",
                                    fc=colour, ec="#555555", lw=1.0))
        ax.text(x + w / 2, y + HEIGHT - 0.12, title, ha="center", va="top", weight="bold")
        ax.text(x + w / 2, y + HEIGHT / 2 - 0.12, detail, ha="center", va="center", fontsize=8)
        if fn:
            ax.text(x + w / 2, y + 0.1, fn, ha="center", va="bottom", fontsize=7.5, family="monospace",
                    color="#1f4e8c")
        if chapter:
            ax.text(x + w - 0.06, y + HEIGHT + 0.06, f"ch. {chapter}", ha="right", va="bottom", fontsize=7.5,
                    color="#666666")
    sides = {("data", "experts"): ("right", "left"), ("experts", "checker"): ("right", "left"),
             ("checker", "clean"): ("right", "left"), ("checker", "cer"): ("bottom", "top"),
             ("cer", "review"): ("left", "right"), ("review", "select"): ("left", "right"),
             ("clean", "train"): ("bottom", "top"), ("select", "train"): ("bottom", "bottom")}
    for a, b, label in ARROWS:
        sa, sb = sides[(a, b)]
        start, end = _anchor(a, sa), _anchor(b, sb)
        if (a, b) == ("select", "train"):  # under the bottom row, then up into the fine-tune box
            low = 0.3
            ax.plot([start[0], start[0], end[0]], [start[1], low, low], color="#333333", lw=1.2)
            ax.add_patch(FancyArrowPatch((end[0], low), end, arrowstyle="-|>", mutation_scale=12, color="#333333",
                                         lw=1.2))
            start = (end[0] - 1.6, low + 0.45)
        else:
            ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color="#333333", lw=1.2))
        if label:
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            ax.text(mx + 0.08, my + 0.08, label, fontsize=8, style="italic", color="#333333")
    ax.text(0.2, 6.05, "RobustFT: detect → relabel → select → fine-tune", fontsize=11, weight="bold", va="top")
    fig.tight_layout()
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("pipeline.svg")
    print(draw(out))
