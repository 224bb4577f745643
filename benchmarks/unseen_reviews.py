"""Do the exported models classify unseen, clearly worded movie-review sentences?

Runs HF's own ``pipeline("text-classification")`` on ``RUN/teacher`` and ``RUN/student`` (the
label names come from their configs' ``id2label``) over 24 sentences written for this check,
none of them from the Rotten Tomatoes data, and prints each model's share right.

    python benchmarks/unseen_reviews.py runs/minilm-rt-20261201-120000 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

POSITIVE = [
    "A warm, funny and beautifully acted film that I would happily watch again.",
    "The best thriller of the year: tense, clever and superbly directed.",
    "An absolute delight from start to finish.",
    "Gorgeous photography and a moving story make this a must-see.",
    "The cast is wonderful and the script is sharp and witty.",
    "A touching, heartfelt drama with a brilliant lead performance.",
    "I loved every minute of this charming little comedy.",
    "Smart, original and thoroughly entertaining.",
    "A masterpiece of suspense that keeps you guessing until the end.",
    "The animation is stunning and the characters are unforgettable.",
    "A joyful, uplifting movie that left the whole audience smiling.",
    "Powerful, honest filmmaking that deserves every award it gets.",
]
NEGATIVE = [
    "A dull, lifeless film that drags on for far too long.",
    "The plot makes no sense and the acting is embarrassingly bad.",
    "One of the most boring movies I have ever sat through.",
    "A lazy, predictable sequel with nothing new to say.",
    "The jokes fall flat and the characters are paper thin.",
    "An ugly, pointless mess that wastes a talented cast.",
    "I walked out halfway through; it was that tedious.",
    "Clumsy direction and a terrible script sink this thriller.",
    "A painfully slow and forgettable drama.",
    "The dialogue is awful and the ending is even worse.",
    "Loud, stupid and exhausting from start to finish.",
    "A complete waste of two hours.",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    from transformers import pipeline

    texts = POSITIVE + NEGATIVE
    expected = ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)
    figures = {}
    for name in ("teacher", "student"):
        classify = pipeline("text-classification", model=str(args.run_dir / name), device="cpu")
        labels = [answer["label"] for answer in classify(texts)]
        right = sum(a == b for a, b in zip(labels, expected))
        figures[name] = {"right": right, "total": len(texts), "share": right / len(texts),
                         "wrong": [t for t, a, b in zip(texts, labels, expected) if a != b]}
        print(f"{name}: {right}/{len(texts)} right ({right / len(texts):.0%})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
