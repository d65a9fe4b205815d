"""Cold start: catalog items the serving index lacks get text vectors in the item space.

A catalog record for an item the index lacks is embedded with all-MiniLM-L6-v2 and projected
into the item space by the serving model's learned projection, then added to the index
(``SnapshotHolder.add_items``) and to the model's item vectors, marked fresh for the policy.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import numpy as np

from streamrec.index.swap import SnapshotHolder
from streamrec.models.encoder.item_text import item_text
from streamrec.stream.contract import Item

if TYPE_CHECKING:
    from streamrec.models.encoder.text import TextEncoder
    from streamrec.stream.served_model import ServedModel

log = logging.getLogger(__name__)


class ColdStart:
    """Embeds catalog items the serving index lacks and adds them (module docstring)."""

    def __init__(self, holder: SnapshotHolder[ServedModel]) -> None:
        self.holder = holder
        self._text: TextEncoder | None = None
        self._lock = threading.Lock()

    def text_encoder(self) -> TextEncoder:
        with self._lock:  # loaded once (about 9 s), from whichever thread asks first
            if self._text is None:
                from streamrec.models.encoder.text import TextEncoder

                self._text = TextEncoder()
            return self._text

    def add(self, items: list[Item]) -> int:
        """Embed and index the items the current index lacks; returns how many were added."""
        snap = self.holder.current()
        fresh = [i for i in items if i.item_id not in snap.index]
        if not fresh:
            return 0
        texts = [item_text_of(i) for i in fresh]
        vectors = snap.encoder.encoder.text_vectors_to_item_space(self.text_encoder().embed(texts))
        ids = [i.item_id for i in fresh]
        self.holder.add_items(ids, vectors.astype(np.float32), snap.model_version)
        snap.encoder.vectors.add(ids, vectors)
        snap.encoder.cold_items.update(ids)
        log.info("cold start: %d catalog items added to index %s", len(ids), snap.model_version)
        return len(ids)


def item_text_of(item: Item) -> str:
    """The text a cold item is embedded from."""
    return item_text(item.title, item.categories, item.text)
