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

# (x, y, width, title, detail, function, chapter, colour); two rows of four boxes. The figure
# is drawn at about the book's text width, so its font sizes are close to the page's.
BOXES = {
    "data": (0.1, 2.5, 2.35, "Noisy SFT data", "questions, options,\nmaybe-wrong labels",
             "load_samples", 1, "#e8eef7"),
    "experts": (3.0, 2.5, 2.5, "Two experts", "direct: score options\nreasoning: step by step",
                "run_detection_experts", 3, "#fdf1dc"),
    "checker": (6.05, 2.5, 2.5, "Checker", "do both experts\nagree with the label?",
                "detect_noise", 3, "#fdf1dc"),
    "clean": (9.3, 2.5, 1.9, "Clean set", "labels kept\nas given", "", None, "#e3f4e1"),
    "cer": (6.05, 0.45, 2.5, "Relabeling (CER)", "the k nearest clean\nsamples as examples",
            "relabel", 4, "#f7e3e3"),
    "review": (3.0, 0.45, 2.5, "Review", "reasoning + CER\nanswers → new label",
               "relabel(review=…)", 4, "#f7e3e3"),
    "select": (0.1, 0.45, 2.35, "Entropy selection", "keep the β most\nconfident relabels",
               "select_by_entropy", 5, "#ece3f7"),
    "train": (9.3, 0.45, 1.9, "Fine-tune", "LoRA / QLoRA on\nclean ∪ selected", "finetune", 6, "#e3f4e1"),
}
HEIGHT = 1.25
ARROWS = [("data", "experts", ""), ("experts", "checker", ""), ("checker", "clean", "agree"),
          ("checker", "cer", "potentially noisy"), ("cer", "review", ""), ("review", "select", ""),
          ("clean", "train", ""), ("select", "train", "selected")]
FONT = {"title": 11.5, "detail": 10.5, "function": 9.5, "chapter": 9.5, "arrow": 10.5, "figure": 13}


def _anchor(name, side):
    x, y, w = BOXES[name][:3]
    return {"right": (x + w, y + HEIGHT / 2), "left": (x, y + HEIGHT / 2), "top": (x + w / 2, y + HEIGHT),
            "bottom": (x + w / 2, y)}[side]


def draw(path: Path) -> Path:
    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "robustft", "font.size": FONT["detail"]})
    fig, ax = plt.subplots(figsize=(8.4, 3.9))
    ax.set_xlim(0, 11.3)
    ax.set_ylim(0, 4.4)
    ax.set_position([0, 0, 1, 1])
    ax.axis("off")
    for name, (x, y, w, title, detail, fn, chapter, colour) in BOXES.items():
        ax.add_patch(FancyBboxPatch((x, y), w, HEIGHT, boxstyle="round,pad=0.03,rounding_size=0.1",
                                    fc=colour, ec="#555555", lw=1.0))
        ax.text(x + w / 2, y + HEIGHT - 0.08, title, ha="center", va="top", weight="bold",
                fontsize=FONT["title"])
        ax.text(x + w / 2, y + HEIGHT / 2 - (0.02 if fn else 0.12), detail, ha="center", va="center",
                fontsize=FONT["detail"], linespacing=1.15)
        if fn:
            ax.text(x + w / 2, y + 0.07, fn, ha="center", va="bottom", fontsize=FONT["function"],
                    family="monospace", color="#1f4e8c")
        if chapter:
            ax.text(x + w - 0.04, y + HEIGHT + 0.05, f"ch. {chapter}", ha="right", va="bottom",
                    fontsize=FONT["chapter"], color="#666666")
    sides = {("data", "experts"): ("right", "left"), ("experts", "checker"): ("right", "left"),
             ("checker", "clean"): ("right", "left"), ("checker", "cer"): ("bottom", "top"),
             ("cer", "review"): ("left", "right"), ("review", "select"): ("left", "right"),
             ("clean", "train"): ("bottom", "top"), ("select", "train"): ("bottom", "bottom")}
    arrow = dict(arrowstyle="-|>", mutation_scale=12, color="#333333", lw=1.2, shrinkA=2, shrinkB=2)
    for a, b, label in ARROWS:
        sa, sb = sides[(a, b)]
        start, end = _anchor(a, sa), _anchor(b, sb)
        if (a, b) == ("select", "train"):  # under the bottom row, then up into the fine-tune box
            low = 0.18
            ax.plot([start[0], start[0], end[0]], [start[1], low, low], color="#333333", lw=1.2)
            ax.add_patch(FancyArrowPatch((end[0], low), end, **{**arrow, "shrinkA": 0}))
            ax.text((start[0] + end[0]) / 2, low + 0.04, label, ha="center", va="bottom",
                    fontsize=FONT["arrow"], style="italic", color="#333333")
            continue
        ax.add_patch(FancyArrowPatch(start, end, **arrow))
        if not label:
            continue
        if start[1] == end[1]:  # horizontal: the label above the arrow's middle
            ax.text((start[0] + end[0]) / 2, start[1] + 0.07, label, ha="center", va="bottom",
                    fontsize=FONT["arrow"], style="italic", color="#333333")
        else:  # vertical: the label to the right of the arrow's middle
            ax.text(start[0] + 0.1, (start[1] + end[1]) / 2, label, ha="left", va="center",
                    fontsize=FONT["arrow"], style="italic", color="#333333")
    ax.text(0.1, 4.33, "RobustFT: detect → relabel → select → fine-tune", fontsize=FONT["figure"],
            weight="bold", va="top")
    fig.savefig(path, format="svg", metadata={"Date": None})
    plt.close(fig)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("pipeline.svg")
    print(draw(out))
