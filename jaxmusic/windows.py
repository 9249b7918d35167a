"""One window source: the windows of pieces that training and evaluation read, as
batches of int32 ids (numpy; no TensorFlow).

Framing (DESIGN.md, "Training framing"): a piece is `[BOS] + ids + [EOS]`. A window of
`Te + Td` tokens gives the encoder its first Te and the decoder the Td after them as
targets (`batching.from_windows`). Three kinds of window:

- drawn (training): each piece padded with `Te + Td - 2` PADs before and `Td - 1` after,
  so that every target of a piece (its first note and its EOS included) is a target of
  exactly Td windows; row r of the global batch draws uniformly over the windows of
  data shard floor(r * shards / batch), from a generator seeded by (seed, shard, step);
- carried (training, truncated BPTT): each row reads the pieces of its shard in an
  order drawn anew every epoch, each piece as its tiled windows in order, so that row r
  of step s + 1 continues row r of step s (`reset` where a row starts a piece);
- tiled (evaluation): each piece as `Te - 1` PADs + sequence + PADs to whole windows,
  window i starting at i * Td, so that every target is read exactly once.

Training batches are a pure function of (seed, step, shard): a host reads only its
shards, 1 or N hosts give the same global batches, and a run resumed at step N sees
exactly the batches of a run that never stopped. Each window then gets, once, its
transposition (`conditioning.move`: a random shift, or the shift to the common key of
its key), its condition of the piece so far (`conditioning.Conditioner.prefix`) and,
for a model with a lookback, each decoder step's (`lookback.prefix`), moved with it.
"""

from __future__ import annotations

import dataclasses
import heapq

import numpy as np

from jaxmusic import batching, conditioning, lookback
from jaxmusic import codec as codec_lib
from jaxmusic.errors import Error


class WindowError(Error, ValueError):
    """A window setting that cannot serve batches: says which and why."""


@dataclasses.dataclass(frozen=True)
class Pieces:
    """Pieces of one split (or one host's share of it).

    Attributes:
      sequences: int32[n_i] per piece, each [BOS, ids..., EOS].
      genres: int32[P] genre indices into codec.genres.
    """

    sequences: list[np.ndarray]
    genres: np.ndarray

    def __len__(self) -> int:
        return len(self.sequences)


def _laid_out(pieces: Pieces, before: int, length) -> tuple[np.ndarray, np.ndarray]:
    """Each piece after `before` PADs, in `length(n)` tokens in all, laid end to end:
    (flat int32[N], where each piece's padding starts int64[P])."""
    parts, first, offset = [], [], 0
    for seq in pieces.sequences:
        part = np.zeros(length(seq.shape[0]), np.int32)
        part[before : before + seq.shape[0]] = seq
        parts.append(part)
        first.append(offset)
        offset += part.shape[0]
    return np.concatenate(parts), np.asarray(first, np.int64)


def drawn_framing(pieces: Pieces, te: int, td: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The drawn windows' framing: (flat, first, count int64[P] windows per piece: every
    window with at least one target of the piece, len + Td - 2)."""
    flat, first = _laid_out(pieces, te + td - 2, lambda n: te + td - 2 + n + td - 1)
    return flat, first, np.asarray([s.shape[0] + td - 2 for s in pieces.sequences], np.int64)


def tiled_framing(pieces: Pieces, te: int, td: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tiled windows' framing: (flat, first, count int64[P]); window i of a piece starts
    at first + i * Td; with Te == Td window i + 1's encoder reads window i's targets."""
    count = np.asarray([-(-(s.shape[0] - 1) // td) for s in pieces.sequences], np.int64)
    sizes = iter(te - 1 + (count - 1) * td + te + td)
    flat, first = _laid_out(pieces, te - 1, lambda n: int(next(sizes)))
    return flat, first, count


@dataclasses.dataclass(frozen=True)
class _Shard:
    """One shard's pieces, framed, with what a window reads beside its ids."""

    flat: np.ndarray
    first: np.ndarray
    count: np.ndarray
    genres: np.ndarray
    keys: np.ndarray | None  # the condition of the piece so far at every position
    densities: np.ndarray | None
    lookback: tuple[np.ndarray, np.ndarray] | None  # (notes, buckets) at every position

    def decoder_reads(self, starts: np.ndarray, te: int, td: int, shift, tables) -> dict[str, np.ndarray]:
        """The lookback of the decoder steps of windows starting at `starts` int64[R] (none
        without one), moved by their shift int[R] (None: not moved); a note that cannot
        move counts as no match."""
        if self.lookback is None:
            return {}
        at = starts[:, None] + te - 1 + np.arange(td)[None, :]
        notes, buckets = self.lookback[0][at], self.lookback[1][at].astype(np.int32)
        if shift is not None:
            notes = lookback.moved(notes, shift, tables)
            buckets = np.where(notes == codec_lib.PAD, 0, buckets)  # a note that left: no match
        return {"lookback": notes.astype(np.int32), "lookback_bucket": buckets}


def _shard(pieces: Pieces, framing, te: int, td: int, conditioner, spec: lookback.Spec | None) -> _Shard:
    flat, first, count = framing(pieces, te, td)
    keys = densities = None
    if conditioner is not None and conditioner.in_batches:
        try:
            keys, densities = conditioner.prefix(flat, first)
        except ValueError as e:
            raise WindowError(str(e)) from None
    reads = None if spec is None else lookback.prefix(flat, first, spec.window, spec.first_note_id)
    return _Shard(flat, first, count, pieces.genres, keys, densities, reads)


def _seed(*values: int) -> np.random.Generator:
    """A generator that is a pure function of the values (any int)."""
    return np.random.default_rng([v % 2**63 for v in values])


class TrainWindows:
    """`windows(step)` -> the training batch of a step (`batching.from_windows`'s fields,
    with `key` and `density` where the conditioner reads the piece, `reset` when carried).

    Args:
      shards: this host's shards of the train split; each feeds batch_size / len(shards) rows.
      shard_ids: the global index of each shard (its random draws are keyed by it).
      batch_size: this host's rows.
      transpose: `codec.transpose_tables(k)`; each window (each piece, carried) takes a
        shift uniformly; None: no random transposition.
      conditioner: the model's `conditioning.Conditioner` (None: the genre alone); with a
        common key, every window moves to C major or A minor by its key instead.
      lookback_spec: a model with a lookback's (`lookback.Spec`): the batches then have
        `lookback` and `lookback_bucket`, int32[B, Td] each.
    """

    def __init__(self, shards: list[Pieces], *, shard_ids: list[int], batch_size: int, encoder_len: int,
                 decoder_len: int, seed: int, transpose: np.ndarray | None = None, carried: bool = False,
                 conditioner: conditioning.Conditioner | None = None,
                 lookback_spec: lookback.Spec | None = None):  # fmt: skip
        te, td = encoder_len, decoder_len
        if te < 1 or td < 1:
            raise WindowError(f"encoder_len and decoder_len must be >= 1, got {te}, {td}")
        if carried and te != td:
            raise WindowError(f"carried windows need encoder_len == decoder_len, got {te} and {td}")
        common = conditioner.common_key if conditioner is not None else None
        if common is not None and (transpose is not None or carried or not conditioner.in_batches):
            raise WindowError("a common key moves each drawn window by the key of its piece so far: "
                              "not with a random transposition or carried windows")  # fmt: skip
        framing = tiled_framing if carried else drawn_framing
        self._shards = [_shard(p, framing, te, td, conditioner, lookback_spec) for p in shards]
        longest = max(seq.shape[0] for p in shards for seq in p.sequences)
        if not carried and te + td > longest:
            raise WindowError(
                f"a window of {te} + {td} tokens is longer than every piece (the longest has "
                f"{longest} with BOS and EOS): lower encoder_len or decoder_len"
            )
        self._ids, self._seed, self._te, self._td = list(shard_ids), seed, te, td
        self._rows = batching.layout(batch_size, devices=1, processes=1, data_shards=len(shards)).shard_rows
        self._tables = common if common is not None else transpose
        self._common, self._carried = common is not None, carried
        self._movable = None  # carried: movable[shard][piece, shift], every id of the piece moves
        if carried and transpose is not None:
            self._movable = [np.stack([(transpose[:, np.unique(s)] >= 0).all(1) for s in p.sequences])
                             for p in shards]  # fmt: skip

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        parts = [self._rows_of(k, int(step)) for k in range(len(self._shards))]
        fields = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        return batching.from_windows(fields.pop("windows"), fields.pop("genre"), self._te, **fields)

    def _rows_of(self, k: int, step: int) -> dict[str, np.ndarray]:
        """Shard k's rows of a step: windows, genre, and key, density, reset where they apply."""
        shard = self._shards[k]
        starts, piece, shift, out = (self._carried_rows if self._carried else self._drawn_rows)(k, step)
        windows = shard.flat[starts[:, None] + np.arange(self._te + self._td)[None, :]]
        at = starts + self._te - 1  # the window's last encoder position
        keys = None if shard.keys is None else shard.keys[at].astype(np.int64)
        if self._common:
            shift = conditioning.common_shift(keys)
        if shift is not None:
            windows, shift = conditioning.move(windows, shift, self._tables)
        out |= {"windows": windows, "genre": shard.genres[piece]}
        out |= shard.decoder_reads(starts, self._te, self._td, shift, self._tables)
        if keys is not None:
            moved = keys if shift is None else conditioning.transposed(keys, shift)
            out |= {"key": moved.astype(np.int32), "density": shard.densities[at].astype(np.int32)}
        return out

    def _drawn_rows(self, k: int, step: int):
        """(window starts, pieces, random shifts or None, {}) of shard k's rows at a step."""
        shard, rng = self._shards[k], _seed(self._seed, self._ids[k], step)
        cum = np.cumsum(shard.count)
        u = rng.integers(0, cum[-1], self._rows)
        piece = np.searchsorted(cum, u, side="right")
        starts = shard.first[piece] + u - np.where(piece > 0, cum[piece - 1], 0)
        shift = None
        if self._tables is not None and not self._common:
            span = self._tables.shape[0] // 2
            shift = rng.integers(-span, span + 1, self._rows)
        return starts, piece, shift, {}

    def _carried_rows(self, k: int, step: int):
        """(window starts, pieces, each piece's shift or None, {"reset"}) of shard k's rows:
        row r reads its pieces in the epoch's order, window after window."""
        shard = self._shards[k]
        epoch, q = divmod(step, int(shard.count.sum()))
        rng = _seed(self._seed, self._ids[k], epoch)
        order = np.argsort(rng.random((self._rows, shard.count.shape[0])), axis=1)
        ends = np.cumsum(shard.count[order], axis=1)
        at = (ends <= q).sum(1)
        rows = np.arange(self._rows)
        piece = order[rows, at]
        within = q - (ends[rows, at] - shard.count[piece])
        shift = None
        if self._movable is not None:  # one shift a piece, none if a note of it cannot move
            span = self._tables.shape[0] // 2
            shift = rng.integers(-span, span + 1, (self._rows, shard.count.shape[0]))[rows, piece]
            shift = np.where(self._movable[k][piece, shift + span], shift, 0)
        starts = shard.first[piece] + within * self._td
        return starts, piece, shift, {"reset": within == 0}


# ---------------------------------------------------------------- evaluation ----


def eval_windows(pieces: Pieces, encoder_len: int, decoder_len: int,
                 conditioner: conditioning.Conditioner | None = None,
                 lookback_spec: lookback.Spec | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Every tiled window, in piece order: {windows int32[W, Te + Td], genre int32[W],
    count int64[P] windows per piece, first int64[P] each piece's first window}, with key
    and density int32[W] (the piece so far) where the conditioner reads them and the
    decoder steps' lookback (int32[W, Td] each) where the model has one, moved to the
    common key where the conditioner asks."""
    shard = _shard(pieces, tiled_framing, encoder_len, decoder_len, conditioner, lookback_spec)
    starts = np.concatenate([f + np.arange(k) * decoder_len for f, k in zip(shard.first, shard.count,
                                                                              strict=True)])  # fmt: skip
    out = {"windows": shard.flat[starts[:, None] + np.arange(encoder_len + decoder_len)[None, :]],
           "genre": np.repeat(pieces.genres, shard.count).astype(np.int32), "count": shard.count,
           "first": np.concatenate([[0], np.cumsum(shard.count)[:-1]])}  # fmt: skip
    shift = None
    if shard.keys is not None:
        at = starts + encoder_len - 1
        out |= {"key": shard.keys[at].astype(np.int32), "density": shard.densities[at].astype(np.int32)}
        if conditioner.common_key is not None:
            moved = conditioning.to_common_key(out["windows"], out["key"], conditioner.common_key)
            out["windows"], out["key"], shift = moved
    tables = None if conditioner is None else conditioner.common_key
    return out | shard.decoder_reads(starts, encoder_len, decoder_len, shift, tables)


def eval_batches(
    pieces: Pieces,
    *,
    batch_size: int,
    encoder_len: int,
    decoder_len: int,
    process_index: int = 0,
    process_count: int = 1,
    carried: bool = False,
    conditioner: conditioning.Conditioner | None = None,
    lookback_spec: lookback.Spec | None = None,
) -> list[dict[str, np.ndarray]]:
    """This host's evaluation batches, the same count on every host: every target of
    the split read once.

    `pieces` is the whole split (every host reads it: evaluation splits are small, and
    dealing windows, not pieces, keeps hosts in step); windows are dealt to hosts one
    by one, padded with empty windows (weight 0). carried: each piece read from its start
    with the state carried from window to window (`_carried_eval_batches`).
    """
    tiled = eval_windows(pieces, encoder_len, decoder_len, conditioner, lookback_spec)
    if carried:
        return _carried_eval_batches(tiled, batch_size, encoder_len, process_index, process_count)
    total = tiled["windows"].shape[0]
    per_host = -(-total // process_count)
    n = -(-per_host // batch_size) * batch_size
    mine = np.arange(process_index, total, process_count)
    fields = _empty_fields(tiled, (n,))
    for name, field in fields.items():
        field[: mine.shape[0]] = tiled[name][mine]
    return [_batch(fields, slice(i, i + batch_size), encoder_len) for i in range(0, n, batch_size)]


# What an empty row of each field holds (a padding row of a batch, weight 0).
_EMPTY = {"key": conditioning.NO_KEY, "density": conditioning.NO_DENSITY}
_PER_WINDOW = ("windows", "genre", "key", "density", "lookback", "lookback_bucket")


def _empty_fields(tiled: dict, rows: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Empty arrays of `rows` windows for every per-window field of `tiled`."""
    return {name: np.full((*rows, *tiled[name].shape[1:]), _EMPTY.get(name, 0), np.int32)
            for name in _PER_WINDOW if name in tiled}  # fmt: skip


def _batch(fields: dict, rows, encoder_len: int) -> dict[str, np.ndarray]:
    """The batch of some rows of `fields` (windows, genre, and the other fields present)."""
    rest = {k: v[rows] for k, v in fields.items() if k not in ("windows", "genre")}
    return batching.from_windows(fields["windows"][rows], fields["genre"][rows], encoder_len, **rest)


def _carried_eval_batches(tiled: dict, batch_size: int, encoder_len: int, process_index: int,
                          process_count: int) -> list[dict[str, np.ndarray]]:  # fmt: skip
    """Carried evaluation batches: the split's pieces dealt to `batch_size * process_count`
    lanes (longest first, each to the lane with the fewest windows so far); a lane is its
    pieces' windows in order, `reset` at each piece's first, so that every target is read
    once with the whole of its piece before it, as in training. Row r of batch t is window
    t of lane r (an empty window, weight 0, once the lane ends); host i feeds lanes
    i * batch_size to (i + 1) * batch_size - 1."""
    count, first = tiled["count"], tiled["first"]
    lanes: list[list[int]] = [[] for _ in range(batch_size * process_count)]
    heap = [(0, lane) for lane in range(len(lanes))]
    for piece in sorted(range(count.shape[0]), key=lambda p: (-count[p], p)):
        load, lane = heapq.heappop(heap)
        lanes[lane].append(piece)
        heapq.heappush(heap, (load + int(count[piece]), lane))
    steps = max(int(sum(count[p] for p in lane)) for lane in lanes)
    fields = _empty_fields(tiled, (steps, batch_size)) | {"reset": np.ones((steps, batch_size), np.float32)}
    for r, lane in enumerate(lanes[process_index * batch_size : (process_index + 1) * batch_size]):
        t = 0
        for piece in lane:
            k, w = int(count[piece]), slice(first[piece], first[piece] + int(count[piece]))
            for name in fields:
                if name != "reset":
                    fields[name][t : t + k, r] = tiled[name][w]
            fields["reset"][t + 1 : t + k, r] = 0
            t += k
    return [_batch(fields, t, encoder_len) for t in range(steps)]
