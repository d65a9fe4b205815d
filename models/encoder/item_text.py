"""The one text an item is embedded from, in training and in serving alike.

Training reads dataset items, serving reads catalog records from the ``items`` topic; both call
``item_text`` so a cold-start item is embedded from exactly the text the projection was fitted
on (a different wording is a train/serve skew the projection never saw).
"""

from __future__ import annotations

from collections.abc import Sequence


def item_text(title: str, categories: Sequence[str] = (), description: str = "") -> str:
    """E.g. ``"Toy Story (1995). Genres: Animation, Comedy"``; empty parts left out."""
    text = title
    if description:
        text += f". {description}"
    if categories:
        text += ". Genres: " + ", ".join(categories)
    return text
