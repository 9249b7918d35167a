"""input_pipeline: the built dataset found, host shares of a split, and training batches
served through tf.data equal to the window source's."""

import itertools

import numpy as np
import pytest

from jaxmusic import conditioning, windows
from jaxmusic import input_pipeline as ip


def test_dataset_dir_finds_the_built_dataset(built, tmp_path):
    data_dir, out, _ = built
    assert ip.dataset_dir(data_dir) == out
    assert ip.dataset_dir(out) == out
    with pytest.raises(ip.DataError, match="no dataset in it"):
        ip.dataset_dir(tmp_path)
    with pytest.raises(ip.DataError, match="not a directory"):
        ip.dataset_dir(tmp_path / "missing")


def test_host_shares_are_disjoint_and_complete(built):
    data_dir, _, _ = built
    whole = ip.load_pieces(data_dir, "train")
    shares = [ip.load_pieces(data_dir, "train", process_index=i, process_count=2) for i in range(2)]
    key = lambda p: {tuple(s.tolist()) for s in p.sequences}  # noqa: E731
    assert not key(shares[0]) & key(shares[1])
    assert key(shares[0]) | key(shares[1]) == key(whole)
    assert len(shares[0]) + len(shares[1]) == len(whole)
    with pytest.raises(ip.DataError, match="split 'dev' is not in the dataset"):
        ip.load_pieces(data_dir, "dev")


@pytest.mark.parametrize("carried", [False, True])
def test_train_batches_are_the_window_sources_from_any_step(built, carried):
    """tf.data serves exactly `windows.TrainWindows`' batches, in order, from the step asked."""
    data_dir, _, _ = built
    codec = ip.load_codec(data_dir)
    shards, ids = ip.load_train_shards(data_dir, num_shards=2)
    cond = conditioning.Conditioner(key=True, density=True, context="piece",
                                    weights=conditioning.id_weights(codec))  # fmt: skip
    kw = dict(shard_ids=ids, batch_size=4, encoder_len=4, decoder_len=4, seed=3, carried=carried,
              transpose=codec.transpose_tables(2), conditioner=cond)  # fmt: skip
    source = windows.TrainWindows(shards, **kw)
    served = list(itertools.islice(ip.train_batches(shards, start_step=5, **kw), 3))
    for step, batch in zip(range(5, 8), served, strict=True):
        want = source(step)
        assert sorted(batch) == sorted(want)
        for name in want:
            np.testing.assert_array_equal(batch[name], want[name])
