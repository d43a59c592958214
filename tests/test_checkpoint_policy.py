"""The checkpoint policy both trainers follow (`fer_jax.train.checkpoint_policy`), on names alone: no files."""

from __future__ import annotations

from fer_jax.train.checkpoint_policy import (
    Step,
    Unreadable,
    best_order,
    first_readable,
    kept,
    resume_order,
    set_aside_reason,
)


def test_kept_is_two_latest_and_one_best():
    assert kept([1, 3, 2], "latest") == [3, 2] and kept([1, 3, 2], "best") == [3]


def test_resume_tries_newest_first_latest_before_best_and_unknown_epochs_first():
    steps = [Step("latest", 2), Step("best", 3), Step("latest", 3), Step("latest", None)]
    assert resume_order(steps, best_is_full_state=True) == [
        Step("latest", None),  # matches no manifest entry: a save cut short is the newest, tried (and named) first
        Step("latest", 3),
        Step("best", 3),
        Step("latest", 2),
    ]
    assert Step("best", 3) not in resume_order(steps, best_is_full_state=False)  # weights alone, or EMA weights


def test_best_falls_back_to_the_latest_of_its_epoch_and_stops_at_a_final_best():
    steps = [Step("best", 2), Step("best", 4), Step("latest", 4), Step("latest", 3), Step("latest", 2)]
    assert best_order(steps) == [Step("best", 4), Step("latest", 4)]
    unfinished = {4}
    assert best_order(steps, lambda best: best.epoch not in unfinished) == [
        Step("best", 4),
        Step("latest", 4),
        Step("best", 2),
        Step("latest", 2),
    ]
    assert best_order(steps, epoch=3) == [Step("latest", 3)]  # the record's best epoch, its best file gone


def test_first_readable_names_each_failure_once_one_is_read(capsys):
    def load(step):
        if step.epoch == 3:
            raise Unreadable(f"latest/{step.epoch} fails its checksum")
        return f"state {step.epoch}"

    loaded, failed = first_readable([Step("latest", 3), Step("latest", 2)], load, lambda s: f"latest/{s.epoch}")
    assert loaded == (Step("latest", 2), "state 2") and failed == [(Step("latest", 3), "latest/3 fails its checksum")]
    assert capsys.readouterr().err == "warning: latest/3 fails its checksum; using latest/2\n"
    assert first_readable([Step("latest", 3)], load, str)[0] is None


def test_what_a_resumed_run_sets_aside():
    assert set_aside_reason(False, None, 2, False) == "not a finished checkpoint: a save cut short"
    assert set_aside_reason(True, 3, 2, False).startswith("newer than epoch 2")
    assert set_aside_reason(True, 1, 2, True) == "damaged or unfinished"
    assert set_aside_reason(True, 2, 2, False) is None and set_aside_reason(True, None, 2, False) is None
