"""A KV cache for rows that come and go: it grows with the tokens in flight, never with the context cap.

Rows are left-padded to the longest row in flight (the right ends line up, so one decode step
writes one column for every row). Buffers grow in chunks and are written in place, so a decode
step costs attention over the rows' width instead of a `torch.cat` of the whole cache; a finished
row leaves (its memory with it) and a new row, prefilled alone, is merged in.

Width never exceeds the longest row's prompt + output cap (≤ max_model_len, as the token budget
clamps it) and rows never exceed the batch cap, so the buffers held stay within the plan's KV term
(batch × max_model_len × bytes per token): `RowCache.bytes_held` is what a test checks against it.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Columns added when a buffer is full: large enough that growth is rare, small next to a context.
GROW_TOKENS = 128


class RowLayer(DynamicLayer):
    """One decoder layer's keys and values, [rows, kv heads, capacity, head dim], `length` in use."""

    def __init__(self, limit: Optional[int] = None) -> None:
        super().__init__()
        self.limit = limit          # never hold more columns than this (max_model_len)
        self.length = 0
        self.key_buf: Optional[torch.Tensor] = None
        self.value_buf: Optional[torch.Tensor] = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.is_initialized = True

    def _reserve(self, needed: int, like: torch.Tensor) -> None:
        capacity = 0 if self.key_buf is None else self.key_buf.shape[-2]
        if needed <= capacity:
            return
        size = needed + GROW_TOKENS
        if self.limit is not None:
            size = max(needed, min(size, self.limit))
        rows, heads, _, dim = like.shape
        keys = like.new_zeros((rows, heads, size, dim))
        values = like.new_zeros((rows, heads, size, dim))
        if self.key_buf is not None and self.length:
            keys[:, :, :self.length] = self.key_buf[:, :, :self.length]
            values[:, :, :self.length] = self.value_buf[:, :, :self.length]
        self.key_buf, self.value_buf = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        self._reserve(self.length + new, key_states)
        self.key_buf[:, :, self.length:self.length + new] = key_states
        self.value_buf[:, :, self.length:self.length + new] = value_states
        self.length += new
        self.keys = self.key_buf[:, :, :self.length]
        self.values = self.value_buf[:, :, :self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def reset(self) -> None:
        self.key_buf = self.value_buf = self.keys = self.values = None
        self.length = 0
        self.is_initialized = False

    def rebuild(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Hold exactly these [rows, heads, length, dim] tensors (a fresh, compact buffer)."""
        self.key_buf, self.value_buf = keys.contiguous(), values.contiguous()
        self.length = keys.shape[-2]
        self.keys, self.values = self.key_buf, self.value_buf
        self.is_initialized = True
        self.device = keys.device

    def used(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key_buf[:, :, :self.length], self.value_buf[:, :, :self.length]

    def bytes_held(self) -> int:
        if self.key_buf is None:
            return 0
        return 2 * self.key_buf.numel() * self.key_buf.element_size()


class RowCache(Cache):
    """The cache of the rows in flight; row i is left-padded by `pads[i]` columns."""

    def __init__(self, num_layers: int, limit: Optional[int] = None) -> None:
        super().__init__(layers=[RowLayer(limit) for _ in range(num_layers)])
        self.limit = limit
        self.pads: list[int] = []

    @property
    def width(self) -> int:
        return self.layers[0].length

    @property
    def rows(self) -> int:
        return len(self.pads)

    def bytes_held(self) -> int:
        return sum(layer.bytes_held() for layer in self.layers)

    def attention_mask(self, extra: int, device: torch.device) -> torch.Tensor:
        """[rows, width + extra]: zero over each row's left padding."""
        columns = torch.arange(self.width + extra, device=device)
        return (columns[None, :] >= torch.tensor(self.pads, device=device)[:, None]).long()

    def rollback(self, width: int) -> None:
        """Forget columns past `width` (a step that failed half way through the layers)."""
        for layer in self.layers:
            if layer.length > width:
                layer.length = width
                layer.keys, layer.values = layer.used()

    def keep(self, rows: list[int]) -> None:
        """Only these rows stay; the padding every remaining row shares is cut off."""
        if not rows:
            for layer in self.layers:
                layer.reset()
            self.pads = []
            return
        pads = [self.pads[i] for i in rows]
        cut = min(pads)
        index = torch.tensor(rows, device=self.layers[0].key_buf.device)
        for layer in self.layers:
            keys, values = layer.used()
            layer.rebuild(keys.index_select(0, index)[:, :, cut:], values.index_select(0, index)[:, :, cut:])
        self.pads = [p - cut for p in pads]

    def merge(self, other: "RowCache") -> None:
        """Append the rows of `other` (prefilled alone), re-padding both sides to the wider one."""
        if self.rows == 0:
            for mine, theirs in zip(self.layers, other.layers):
                mine.rebuild(*theirs.used())
            self.pads = list(other.pads)
            return
        mine_width, their_width = self.width, other.width
        width = max(mine_width, their_width)
        for mine, theirs in zip(self.layers, other.layers):
            parts = []
            for layer in (mine, theirs):
                keys, values = layer.used()
                gap = width - keys.shape[-2]
                if gap:
                    keys = torch.nn.functional.pad(keys, (0, 0, gap, 0))
                    values = torch.nn.functional.pad(values, (0, 0, gap, 0))
                parts.append((keys, values))
            mine.rebuild(torch.cat([parts[0][0], parts[1][0]]), torch.cat([parts[0][1], parts[1][1]]))
        self.pads = [p + width - mine_width for p in self.pads] + [p + width - their_width for p in other.pads]
