"""One config schema: the defaults of fields older configs lack, the rules between
fields, and what a resumed run may not change.

Configs are ml_collections files (configs/*.py); a checkpoint keeps the config of its
run as a dict. Every reader takes a config through `complete` first, so a field added
since a checkpoint was written reads as what that checkpoint meant, here and nowhere
else; `validate` holds the rules between fields; `check_resume` says which fields a
workdir's checkpoint fixes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections

from jaxmusic import conditioning, lstm, models
from jaxmusic.errors import Error, UsageError

# Fields added after the first configs, and the value a config without them meant.
DEFAULTS: dict[str, Any] = {
    "batch_size_per_device": 0,
    "data_shards": 0,
    "eval_batches": 0,
    "early_stopping": 0,
    "preview_samples": 0,
    "preview_notes": 128,
    "carried_windows": False,
    "common_key": False,
    "transpose_nearest": False,
    "model.decoder_dropout": 0.0,
    "model.embed_dim": 0,
    "model.key_input": False,
    "model.key_context": "window",
    "model.density_input": False,
    "model.condition_output": False,
    "model.stack_order": "auto",
    "model.lookback": False,
    "model.lookback_window": 1024,
    "model.factored": False,
    "model.copy_group": False,
    "model.recent_notes": 0,
    "optimizer.weight_decay": 0.0,
    # How jaxmusic.sample and jaxmusic.evaluate draw notes (sampler.Settings), as they did
    # before a config held it.
    "sampling.temperature": 0.9,
    "sampling.top_k": 0,
    "sampling.top_p": 0.9,
    "sampling.greedy": False,
    "sampling.carry_state": False,
    "sampling.fixed_length": False,
    "sampling.min_notes": 1,
    "sampling.untempered_rhythm": True,
    "sampling.untempered_copy": True,
    "sampling.primer_instruments": False,
    "sampling.untempered_instruments": False,
    "sampling.line_up": "primer",
}


class ResumeError(Error):
    """A workdir whose checkpoint was trained otherwise than this run asks."""


def complete(config: ml_collections.ConfigDict | dict) -> ml_collections.ConfigDict:
    """A copy of `config` (a ConfigDict, or a checkpoint's dict) with every field of
    DEFAULTS it lacks set to its default."""
    out = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else config)
    for path, value in DEFAULTS.items():
        *parents, name = path.split(".")
        node = out
        for p in parents:
            if p not in node:
                node[p] = ml_collections.ConfigDict()
            node = node[p]
        if name not in node:
            node[name] = value
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """The rules between a complete config's fields.

    Raises:
      UsageError: naming the fields.
    """
    from jaxmusic import sampler  # the drawing settings' own checks

    m = config.model
    if m.dtype not in models.DTYPES:
        raise UsageError(f"config.model.dtype {m.dtype!r} is not one of {', '.join(models.DTYPES)}")
    if m.stack_order not in lstm.ORDERS:
        raise UsageError(f"config.model.stack_order {m.stack_order!r} is not one of {', '.join(lstm.ORDERS)}")
    if config.carried_windows and config.encoder_len != config.decoder_len:
        raise UsageError(
            f"config.carried_windows needs encoder_len == decoder_len (each window's encoder reads the "
            f"notes after the last window's), got {config.encoder_len} and {config.decoder_len}"
        )
    conditioning.check(config)
    if m.copy_group and not m.lookback:
        raise UsageError("config.model.copy_group needs config.model.lookback (it is a second way to copy)")
    if not 0 <= m.recent_notes <= config.encoder_len:
        raise UsageError(
            f"config.model.recent_notes must be from 0 (off) to encoder_len ({config.encoder_len}: a "
            f"training window reads no further back), got {m.recent_notes}"
        )
    if config.early_stopping < 0:
        raise UsageError(f"config.early_stopping must be >= 0 (0: never), got {config.early_stopping}")
    if config.preview_samples < 0:
        raise UsageError(f"config.preview_samples must be >= 0, got {config.preview_samples}")
    if config.preview_samples and config.preview_notes < 1:
        raise UsageError(f"config.preview_notes must be >= 1, got {config.preview_notes}")
    if config.sampling.line_up not in sampler.LINE_UPS:
        raise UsageError(f"config.sampling.line_up must be one of {', '.join(sampler.LINE_UPS)}, "
                         f"got {config.sampling.line_up!r}")  # fmt: skip
    try:
        sampler.Settings.from_config(config.sampling)
    except UsageError as e:
        raise UsageError(f"config.sampling.{e}") from None


@dataclasses.dataclass(frozen=True)
class _Fixed:
    """A field a resumed run may not change: `value` reads it from a complete config."""

    name: str
    value: Callable[[Any], Any]
    why: str


# What a workdir's checkpoint fixes: the shapes of the parameter and optimizer trees, and
# what the batches mean.
_FIXED = (
    *(_Fixed(f"model.{k}", lambda c, k=k: c.model[k], "use a new workdir for a different model")
      for k in ("num_layers", "hidden", "embed_dim", "key_input", "density_input", "condition_output",
                "lookback", "factored", "copy_group", "recent_notes")),
    _Fixed("model.key_context", lambda c: c.model.key_context if c.model.key_input else None,
           "what its key input means; use a new workdir to change it"),
    _Fixed("optimizer.weight_decay > 0", lambda c: c.optimizer.weight_decay > 0,
           "AdamW's state has a node more than Adam's: weight decay can change in a resumed run "
           "but not be turned on or off; use a new workdir"),
    _Fixed("common_key", lambda c: bool(c.common_key),
           "the windows' keys would change mid-run; use a new workdir"),
    _Fixed("transpose_nearest", lambda c: bool(c.transpose_nearest),
           "the windows' notes would change mid-run; use a new workdir"),
    _Fixed("carried_windows", lambda c: bool(c.carried_windows), "use a new workdir to change it"),
)  # fmt: skip


def check_resume(saved: dict, config: ml_collections.ConfigDict, workdir: Any) -> None:
    """A workdir's checkpoint (its config dict `saved`) must have been trained as `config`
    asks in every field it fixes (`_FIXED`).

    Raises:
      ResumeError: naming the workdir, the field, both values and what to do.
    """
    then, now = complete(saved), complete(config)
    for rule in _FIXED:
        a, b = rule.value(then), rule.value(now)
        if a != b:
            raise ResumeError(
                f"workdir {workdir}: its checkpoint has {rule.name}={a}, this run asks for {b} ({rule.why})"
            )
