"""The results store: concurrent writers, damaged files, how a stored run reads."""

import multiprocessing

import pytest

from transfer.core.errors import UserError
from transfer.runs.store import ResultsStore, RunRecord


def _write_rows(path, worker, count):
    store = ResultsStore(path)
    for i in range(count):
        store.add(RunRecord(method="svm", dataset=f"w{worker}", dataset_fingerprint="x", config={"i": i},
                            test_accuracy=i / count, classes=["a", "b"]))


def test_concurrent_writers_lose_no_row(tmp_path):
    path = tmp_path / "results.sqlite"
    ResultsStore(path)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_write_rows, args=(path, w, 40)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    runs = ResultsStore(path).runs()
    assert len(runs) == 120 and len({r.id for r in runs}) == 120
    assert sorted(r.config["i"] for r in runs if r.dataset == "w1") == list(range(40))
    assert len(ResultsStore(path).runs(dataset="w2")) == 40


def test_a_damaged_results_store_is_a_clear_error(tmp_path):
    path = tmp_path / "results.sqlite"
    path.write_bytes(b"not a database " * 100)
    with pytest.raises(UserError, match="results store .* cannot be read"):
        ResultsStore(path)


@pytest.mark.parametrize("chosen, text", [(0.1, "C=0.1"), (10.0, "C=10"), ("epoch 12", "epoch 12"), (None, "")])
def test_a_stored_choice_reads_the_same_everywhere(chosen, text):
    run = RunRecord(method="svm", dataset="d", dataset_fingerprint="f", config={}, test_accuracy=0.5,
                    classes=["a", "b"], chosen=chosen)
    assert run.chosen_text == text
