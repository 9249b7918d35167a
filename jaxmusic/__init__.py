"""jaxmusic: LSTM seq2seq music generation from MIDI in JAX/Flax.

Modules in the order data flows through them: midi_io (MIDI <-> notes), codec and
codec_fit (notes <-> pseudo-note ids), conditioning (genre, key, density), windows
and input_pipeline (dataset -> batches), batching, lstm and models (the LSTM
encoder-decoder), parallel, steps and trainer (training), checkpoint, inference and
sampler (new music), sample_files and render (files), evaluation (the report);
docs/layout.md has one line on each, and the rules the import graph keeps.
"""

import os as _os

# Paths in a bucket go through fsspec (gcsfs), not TensorFlow's GCS file system, which
# no emulator can stand in for: etils.epath reads this once, before its first gs:// path;
# an emulator of GCS named for gcsfs and google-cloud-storage serves TensorStore (orbax's
# arrays) too (jaxmusic.fileio says more).
_os.environ.setdefault("EPATH_USE_TF", "false")
if _os.environ.get("STORAGE_EMULATOR_HOST"):
    _os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", _os.environ["STORAGE_EMULATOR_HOST"])
    # gcsfs's experimental layer asks GCS's control plane (gRPC) each bucket's layout, which
    # an emulator lacks: it would ask again, and warn, at every call.
    _os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
