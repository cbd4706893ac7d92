"""MicroBatcher with a stub model: grouping by settings, batch sizes, failure isolation, and requests nobody waits
for (cancelled, past their deadline, client gone) never generated."""
import threading
import time

import pytest

from config import GenerationSettings
from inference.batching import ClientGone, MicroBatcher, RequestExpired


class Recorder:
    def __init__(self, fail_on=None, delay=0.0):
        self.calls, self.fail_on, self.delay = [], fail_on, delay

    def __call__(self, documents, settings):
        self.calls.append((list(documents), settings.max_new_tokens))
        time.sleep(self.delay)
        if self.fail_on in documents:
            raise ValueError(f"cannot do {self.fail_on}")
        return [f"{doc}:{settings.max_new_tokens}" for doc in documents]


def submit_together(batcher, items):
    futures = [None] * len(items)
    barrier = threading.Barrier(len(items))

    def go(i):
        barrier.wait()
        futures[i] = batcher.submit(items[i][0], GenerationSettings(max_new_tokens=items[i][1]))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [f.result(timeout=10) if f.exception(timeout=10) is None else f.exception() for f in futures]


def test_requests_arriving_together_share_a_call_per_settings():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.2)
    items = [("a", 5), ("b", 5), ("c", 7), ("d", 5)]
    assert submit_together(batcher, items) == ["a:5", "b:5", "c:7", "d:5"]
    assert sorted(len(docs) for docs, _ in run.calls) == [1, 3]
    assert batcher.stats()["largest_batch"] == 3 and batcher.stats()["requests"] == 4
    batcher.close(5)


def test_max_batch_size_one_turns_batching_off():
    run = Recorder()
    batcher = MicroBatcher(run, max_batch_size=1, max_wait_s=0.05)
    assert submit_together(batcher, [(str(i), 3) for i in range(4)]) == [f"{i}:3" for i in range(4)]
    assert [len(docs) for docs, _ in run.calls] == [1, 1, 1, 1]
    batcher.close(5)


def test_a_failing_document_does_not_fail_its_batch_mates():
    batcher = MicroBatcher(Recorder(fail_on="bad"), max_batch_size=8, max_wait_s=0.2)
    results = submit_together(batcher, [("ok1", 2), ("bad", 2), ("ok2", 2)])
    assert results[0] == "ok1:2" and results[2] == "ok2:2"
    assert isinstance(results[1], ValueError) and "cannot do bad" in str(results[1])
    batcher.close(5)


def test_cancelled_request_is_skipped_and_close_drains():
    run = Recorder(delay=0.3)
    batcher = MicroBatcher(run, max_batch_size=1, max_wait_s=0)
    first = batcher.submit("first", GenerationSettings())
    time.sleep(0.1)  # the worker is busy with "first"
    second = batcher.submit("second", GenerationSettings())
    assert second.cancel()
    third = batcher.submit("third", GenerationSettings())
    batcher.close(5)
    assert first.result() and third.result() and [docs for docs, _ in run.calls] == [["first"], ["third"]]
    assert batcher.stats()["cancelled"] == 1 and batcher.stats()["requests"] == 2
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("late", GenerationSettings())


def test_request_past_its_deadline_is_never_generated():
    run = Recorder(delay=0.4)
    batcher = MicroBatcher(run, max_batch_size=1, max_wait_s=0)
    first = batcher.submit("first", GenerationSettings())
    time.sleep(0.1)  # the worker is busy with "first" until 0.4 s
    late = batcher.submit("late", GenerationSettings(), deadline=time.monotonic() + 0.1)
    on_time = batcher.submit("on time", GenerationSettings(), deadline=time.monotonic() + 30)
    batcher.close(5)
    assert first.result() and on_time.result()
    with pytest.raises(RequestExpired):
        late.result()
    assert [docs for docs, _ in run.calls] == [["first"], ["on time"]]
    assert batcher.stats()["expired"] == 1


def test_deadline_is_checked_when_the_group_runs_not_when_it_was_collected():
    """Two settings collected together run one after the other: the second group's request may expire meanwhile."""
    run = Recorder(delay=0.4)
    batcher = MicroBatcher(run, max_batch_size=8, max_wait_s=0.1)
    first = batcher.submit("first", GenerationSettings(max_new_tokens=5))
    late = batcher.submit("late", GenerationSettings(max_new_tokens=7), deadline=time.monotonic() + 0.3)
    batcher.close(5)
    assert first.result() == "first:5" and isinstance(late.exception(), RequestExpired)
    assert [docs for docs, _ in run.calls] == [["first"]]


def test_request_whose_client_left_is_never_generated():
    run = Recorder(delay=0.3)
    batcher = MicroBatcher(run, max_batch_size=1, max_wait_s=0)
    connected = {"a": True, "b": True}
    first = batcher.submit("first", GenerationSettings())
    time.sleep(0.1)
    left = batcher.submit("left", GenerationSettings(), gone=lambda: not connected["a"])
    stayed = batcher.submit("stayed", GenerationSettings(), gone=lambda: not connected["b"])
    connected["a"] = False  # hangs up while "first" is generated
    batcher.close(5)
    assert first.result() and stayed.result().startswith("stayed:")
    with pytest.raises(ClientGone):
        left.result()
    assert [docs for docs, _ in run.calls] == [["first"], ["stayed"]] and batcher.stats()["client_gone"] == 1
