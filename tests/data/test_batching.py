"""Token-budget batching and the resumable, shardable epoch iterator (toolkit.data.batching)."""

import threading
import time

import numpy as np
import pytest
import torch

from toolkit.data import batching
from toolkit.data.batching import EpochBatchIterator, batch_by_size
from toolkit.data.dictionary import Dictionary
from toolkit.data.indexed_dataset import IndexedDataset, write_indexed
from toolkit.data.language_pair_dataset import LanguagePairDataset

DICT = Dictionary(["<s>", "<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(4, 50)])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """400 pairs of 1..40 tokens, plus a few that get filtered (empty side, too long)."""
    rng = np.random.default_rng(123)
    src, tgt = [], []
    for _ in range(400):
        n = int(rng.integers(1, 41))
        src.append(rng.integers(4, len(DICT), n).tolist())
        tgt.append(rng.integers(4, len(DICT), max(1, n + int(rng.integers(-3, 4)))).tolist())
    for i in (7, 100):
        src[i] = []
    tgt[250] = []
    src[300] = [5] * 60
    folder = tmp_path_factory.mktemp("pairs")
    write_indexed(folder / "d.src", src, len(DICT))
    write_indexed(folder / "d.tgt", tgt, len(DICT))
    data = LanguagePairDataset(IndexedDataset(folder / "d.src"), IndexedDataset(folder / "d.tgt"),
                               DICT, DICT, max_positions=48)
    assert data.skipped == {"empty": 3, "too_long": 1} and len(data) == 396
    return data


def ids(batches) -> list:
    return [b["id"].tolist() for b in batches]


def flat(batch_ids) -> list:
    return sorted(i for b in batch_ids for i in b)


def padding_fraction(data, index_batches) -> float:
    cells = real = 0
    for b in index_batches:
        sizes = np.maximum(data.src_sizes[b], data.tgt_sizes[b])
        cells += len(b) * sizes.max()
        real += sizes.sum()
    return 1 - real / cells


# --- batch_by_size ----------------------------------------------------------------------------

def test_batch_by_size_respects_budgets(dataset):
    order = np.random.default_rng(0).permutation(dataset.indices)
    num_tokens = np.maximum(dataset.src_sizes, dataset.tgt_sizes)
    for max_tokens, max_sentences in ((64, None), (200, None), (200, 5), (1000, 7), (49, 1)):
        batches = batch_by_size(order, num_tokens, max_tokens, max_sentences)
        assert np.concatenate(batches).tolist() == order.tolist()  # consecutive, nothing lost
        for b in batches:
            assert len(b) >= 1
            assert len(b) * num_tokens[b].max() <= max_tokens
            if max_sentences is not None:
                assert len(b) <= max_sentences
        # greedy: adding the next pair to a batch would have broken a budget
        for b, nxt in zip(batches, batches[1:]):
            grown = np.append(b, nxt[0])
            assert (len(grown) * num_tokens[grown].max() > max_tokens
                    or (max_sentences is not None and len(grown) > max_sentences))


def test_batch_by_size_exact_fit_and_edge_cases():
    num_tokens = np.array([4, 4, 4, 4, 2, 8])
    assert [b.tolist() for b in batch_by_size(np.arange(4), num_tokens, 16)] == [[0, 1, 2, 3]]
    assert [b.tolist() for b in batch_by_size(np.arange(4), num_tokens, 15)] == [[0, 1, 2], [3]]
    # a long pair raises the cost of every row of its batch
    assert [b.tolist() for b in batch_by_size(np.array([4, 0, 5]), num_tokens, 8)] == [[4, 0], [5]]
    assert batch_by_size(np.array([], dtype=np.int64), num_tokens, 8) == []


def test_batch_by_size_rejects_a_pair_longer_than_max_tokens():
    num_tokens = np.array([3, 9, 2])
    with pytest.raises(ValueError, match="pair 1 has 9 tokens.*max_tokens=8"):
        batch_by_size(np.arange(3), num_tokens, 8)


# --- EpochBatchIterator -----------------------------------------------------------------------

def make_iter(dataset, **kwargs):
    kwargs.setdefault("max_tokens", 200)
    kwargs.setdefault("num_workers", 0)
    return EpochBatchIterator(dataset, **kwargs)


def test_every_pair_once_per_epoch(dataset):
    itr = make_iter(dataset, max_tokens=256, max_sentences=12, seed=3)
    kept = sorted(dataset.indices.tolist())
    seen = []
    for epoch in (1, 2, 3):
        assert itr.epoch == epoch
        n = len(itr)
        batches = ids(itr.next_epoch_itr())
        assert len(batches) == n
        assert flat(batches) == kept
        assert all(len(b) <= 12 for b in batches)
        assert itr.epoch == epoch + 1 and itr.end_of_epoch()
        seen.append(batches)
    assert seen[0] != seen[1] != seen[2] and seen[0] != seen[2]


def test_collated_batches_stay_within_max_tokens(dataset):
    itr = make_iter(dataset, max_tokens=180)
    for sample in itr.next_epoch_itr():
        rows = sample["nsentences"]
        width = max(sample["net_input"]["src_tokens"].shape[1], sample["target"].shape[1])
        assert rows * width <= 180


def test_shuffle_is_reproducible_per_seed_and_epoch(dataset):
    a, b, c = (make_iter(dataset, seed=s) for s in (1, 1, 2))
    epochs_a = [ids(a.next_epoch_itr()) for _ in range(2)]
    epochs_b = [ids(b.next_epoch_itr()) for _ in range(2)]
    epochs_c = [ids(c.next_epoch_itr()) for _ in range(2)]
    assert epochs_a == epochs_b
    assert epochs_a[0] != epochs_a[1]
    assert epochs_a[0] != epochs_c[0] and epochs_a[1] != epochs_c[1]
    # batches() is a pure function of (seed, epoch)
    assert [x.tolist() for x in a.batches(2)] == epochs_a[1]
    assert [x.tolist() for x in make_iter(dataset, seed=1).batches(2)] == epochs_a[1]


def test_without_shuffle_every_epoch_is_the_same(dataset):
    itr = make_iter(dataset, shuffle=False)
    first, second = ids(itr.next_epoch_itr()), ids(itr.next_epoch_itr())
    assert first == second and flat(first) == sorted(dataset.indices.tolist())
    order = np.concatenate([np.array(b) for b in first])
    keys = list(zip(dataset.tgt_sizes[order], dataset.src_sizes[order]))
    assert keys == sorted(keys)  # bucketed by (target, source) length, shortest first


def test_bucketing_lowers_padding(dataset):
    bucketed = make_iter(dataset, bucket_by_length=True).batches(1)
    unbucketed = make_iter(dataset, bucket_by_length=False).batches(1)
    assert flat([b.tolist() for b in unbucketed]) == sorted(dataset.indices.tolist())
    assert padding_fraction(dataset, bucketed) < 0.5 * padding_fraction(dataset, unbucketed)
    assert len(bucketed) < len(unbucketed)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_mid_epoch_gives_exactly_the_remaining_batches(dataset, num_workers):
    reference = make_iter(dataset, seed=5, num_workers=num_workers)
    ids(reference.next_epoch_itr())  # epoch 1
    epoch2 = ids(reference.next_epoch_itr())
    assert len(epoch2) > 10

    itr = make_iter(dataset, seed=5, num_workers=num_workers)
    ids(itr.next_epoch_itr())
    it = itr.next_epoch_itr()
    consumed = [next(it)["id"].tolist() for _ in range(7)]
    assert consumed == epoch2[:7]
    state = itr.state_dict()
    assert state == {"epoch": 2, "iterations_in_epoch": 7}
    assert not itr.end_of_epoch()
    it.close()

    resumed = make_iter(dataset, seed=5, num_workers=num_workers)
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    rest = ids(resumed.next_epoch_itr())
    assert rest == epoch2[7:]
    assert flat(consumed + rest) == sorted(dataset.indices.tolist())
    assert resumed.state_dict() == {"epoch": 3, "iterations_in_epoch": 0}
    # the epoch after the resumed one is a full, normal epoch
    assert ids(resumed.next_epoch_itr()) == ids(reference.next_epoch_itr())


def test_resume_after_the_last_batch_finishes_the_epoch(dataset):
    itr = make_iter(dataset, seed=2)
    n = len(itr)
    it = itr.next_epoch_itr()
    for _ in range(n):
        next(it)
    state = itr.state_dict()
    assert state == {"epoch": 1, "iterations_in_epoch": n}
    resumed = make_iter(dataset, seed=2)
    resumed.load_state_dict(state)
    assert list(resumed.next_epoch_itr()) == []
    assert resumed.state_dict() == {"epoch": 2, "iterations_in_epoch": 0}
    assert ids(resumed.next_epoch_itr()) == [b.tolist() for b in make_iter(dataset, seed=2).batches(2)]


def test_state_counts_iterations_while_iterating(dataset):
    itr = make_iter(dataset, num_workers=1)
    for k, _ in enumerate(itr.next_epoch_itr(), start=1):
        assert itr.state_dict() == {"epoch": 1, "iterations_in_epoch": k}
    assert itr.state_dict() == {"epoch": 2, "iterations_in_epoch": 0}


def test_sharding_gives_disjoint_equal_batches(dataset):
    full = make_iter(dataset, seed=9, max_tokens=150)
    ranks = [make_iter(dataset, seed=9, max_tokens=150, shard=(r, 2)) for r in (0, 1)]
    for epoch in (1, 2):
        per_rank = [ids(r.next_epoch_itr()) for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) > 0
        sets = [set(i for b in batches for i in b) for batches in per_rank]
        assert not sets[0] & sets[1]
        assert sum(len(b) for batches in per_rank for b in batches) == len(sets[0]) + len(sets[1])
        all_batches = [x.tolist() for x in full.batches(epoch)]
        # the ranks together cover every batch but (at most) the last odd one
        assert len(all_batches) - 1 <= 2 * len(per_rank[0]) <= len(all_batches)
        union = sorted(per_rank[0] + per_rank[1])
        assert all(b in all_batches for b in union)


def test_sharding_counts_match_for_odd_and_even_batch_numbers(dataset):
    counts = set()
    for max_tokens in range(100, 260, 13):
        n = len(make_iter(dataset, max_tokens=max_tokens, seed=4).batches(1))
        counts.add(n % 2)
        shards = [make_iter(dataset, max_tokens=max_tokens, seed=4, shard=(r, 2)) for r in (0, 1)]
        assert [len(x) for x in shards] == [n // 2, n // 2]
        assert [len(ids(x.next_epoch_itr())) for x in shards] == [n // 2, n // 2]
    assert counts == {0, 1}  # both cases were exercised


def test_prefetching_matches_no_prefetching(dataset):
    for seed in (1, 2):
        plain = make_iter(dataset, seed=seed, num_workers=0)
        prefetched = make_iter(dataset, seed=seed, num_workers=1)
        for _ in range(2):
            a, b = list(plain.next_epoch_itr()), list(prefetched.next_epoch_itr())
            assert len(a) == len(b)
            for x, y in zip(a, b):
                assert x["id"].tolist() == y["id"].tolist()
                assert torch.equal(x["net_input"]["src_tokens"], y["net_input"]["src_tokens"])
                assert torch.equal(x["net_input"]["prev_output_tokens"], y["net_input"]["prev_output_tokens"])
                assert torch.equal(x["target"], y["target"])
                assert x["ntokens"] == y["ntokens"]


class Boom(RuntimeError):
    pass


def test_collate_error_in_prefetch_thread_reaches_the_consumer(dataset, monkeypatch):
    itr = make_iter(dataset, num_workers=1)
    calls = []
    original = dataset.collate

    def collate(indices):
        calls.append(threading.current_thread())
        if len(calls) == 4:
            raise Boom("collate failed")
        return original(indices)

    monkeypatch.setattr(dataset, "collate", collate)
    got = []
    with pytest.raises(Boom, match="collate failed"):
        for sample in itr.next_epoch_itr():
            got.append(sample)
    assert len(got) == 3
    assert calls[0] is not threading.main_thread()  # it really ran in the background
    assert itr.epoch == 1  # a failed epoch is not counted as done


def prefetch_threads() -> set:
    return {t for t in threading.enumerate()
            if "produce" in getattr(getattr(t, "_target", None), "__name__", "")}


def wait_for_threads_to_end(before: set, timeout: float = 3.0) -> set:
    deadline = time.monotonic() + timeout
    while prefetch_threads() - before and time.monotonic() < deadline:
        time.sleep(0.02)
    return prefetch_threads() - before


@pytest.mark.parametrize("total", [3, 5, 6, 40])
def test_abandoned_prefetch_stops_its_thread(total):
    """Closing the consumer early must not leave the producer thread blocked forever."""
    before = prefetch_threads()
    gen = batching._prefetch(iter(range(total)), depth=4)
    assert next(gen) == 0
    time.sleep(0.3)  # let the producer fill the buffer (and run out of items, for short inputs)
    gen.close()
    assert wait_for_threads_to_end(before) == set()


def test_abandoned_prefetch_after_error_stops_its_thread():
    before = prefetch_threads()

    def items():
        yield from range(5)
        raise Boom("late")

    gen = batching._prefetch(items(), depth=4)
    assert next(gen) == 0
    time.sleep(0.3)  # the producer hits the error while the buffer is full
    gen.close()
    assert wait_for_threads_to_end(before) == set()


def test_prefetch_thread_ends_after_a_full_epoch(dataset):
    before = prefetch_threads()
    assert len(list(make_iter(dataset, num_workers=2).next_epoch_itr())) > 0
    assert wait_for_threads_to_end(before) == set()


def test_closing_an_epoch_early_stops_its_prefetching_thread(dataset):
    """A run that stops mid-epoch (max_update, a signal) must not leave a producer thread running
    torch code into interpreter shutdown: that aborts the process after its work is done."""
    before = set(threading.enumerate())
    itr = make_iter(dataset, num_workers=1)
    epoch = itr.next_epoch_itr()
    next(epoch)
    started = set(threading.enumerate()) - before
    assert len(started) == 1 and next(iter(started)).is_alive()
    epoch.close()
    assert not any(thread.is_alive() for thread in started)
    assert itr.state_dict() == {"epoch": 1, "iterations_in_epoch": 1}
