"""The remembered-ids memory against a plain dict, through forgets and pickling."""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from availability_domain.dedupe import CHUNK_IDS, RememberedIds, _restore

operations = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 5_000), st.integers(0, 1_000)),
    st.tuples(st.just("forget"), st.integers(0, 1_000), st.just(0)),
    st.tuples(st.just("restore"), st.just(0), st.just(0)),
), max_size=120)


@settings(max_examples=150, deadline=None)
@given(operations, st.integers(1, 3), st.sampled_from([CHUNK_IDS, 64]))
def test_behaves_like_a_dict_through_forgets_and_restores(ops: list[tuple[str, int, int]],
                                                          bulk: int, chunk: int) -> None:
    """``bulk`` repeats each add, so chunks fill and seal within one example."""
    remembered = RememberedIds(chunk=chunk)
    reference: dict[str, int] = {}
    serial = 0
    for op, a, b in ops:
        if op == "add":
            for _ in range(bulk * 700):
                serial += 1
                event_id = f"e{a}-{serial % 3_000}"
                if event_id not in reference:
                    assert event_id not in remembered
                    remembered.add(event_id, b)
                    reference[event_id] = b
        elif op == "forget":
            remembered.forget_before(a)
            reference = {k: v for k, v in reference.items() if v >= a}
        else:
            remembered = pickle.loads(pickle.dumps(remembered))
        assert remembered == reference and len(remembered) == len(reference)
    assert {k: remembered.get(k) for k in remembered} == reference


def test_a_snapshot_copies_sealed_chunks_instead_of_pickling_their_ids_again() -> None:
    remembered = RememberedIds()
    for n in range(CHUNK_IDS * 5 + 10):
        remembered.add(f"event-{n:08d}", n)
    first = pickle.dumps(remembered)
    remembered.add("one-more", 10**6)
    second = pickle.dumps(remembered)
    sealed = [chunk.ids for chunk in remembered._sealed]
    assert len(sealed) == 5
    assert all(blob in first and blob in second for blob in sealed)
    assert pickle.loads(second) == remembered


def test_a_plain_dict_from_an_older_snapshot_is_taken_over() -> None:
    ids = {f"e{n}": n for n in range(CHUNK_IDS + 5)}
    remembered = RememberedIds(ids)
    assert remembered == ids and len(remembered._sealed) == 1


def test_a_snapshot_copies_the_open_chunk_as_pickled_when_each_id_arrived() -> None:
    remembered = RememberedIds()
    for n in range(300):
        remembered.add(f"event-{n:08d}", n)
    before = bytes(remembered._open_pickled)
    remembered.add("one-more", 10**6)
    assert bytes(remembered._open_pickled).startswith(before)
    snapshot = pickle.dumps(remembered)
    assert bytes(remembered._open_pickled) in snapshot
    assert pickle.loads(snapshot) == remembered


def test_a_later_time_survives_restores_and_forgets() -> None:
    remembered = RememberedIds(chunk=4)
    for n in range(10):
        remembered.add(f"r{n}", n)
    remembered.set_later("r1", 50)
    remembered = pickle.loads(pickle.dumps(remembered))
    assert remembered.get("r1") == 50
    remembered.forget_before(5)
    remembered = pickle.loads(pickle.dumps(remembered))
    assert sorted(remembered) == ["r1", "r5", "r6", "r7", "r8", "r9"]


def test_an_open_chunk_from_an_older_snapshot_as_a_list_is_taken_over() -> None:
    older = _restore([], [("a", 1), ("b", 2)], CHUNK_IDS)
    assert older == {"a": 1, "b": 2}
    older.add("c", 3)
    assert pickle.loads(pickle.dumps(older)) == {"a": 1, "b": 2, "c": 3}
