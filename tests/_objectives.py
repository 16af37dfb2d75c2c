"""Training functions shared by the tuner tests (importable by worker processes)."""

from __future__ import annotations

import math
import os


def quadratic(hp):
    """Minimum 0 at x = 0.3; a categorical penalty; returns named metrics."""
    loss = (hp["x"] - 0.3) ** 2 + (0.0 if hp.get("opt", "a") == "a" else 0.1)
    return {"loss": loss, "accuracy": 1.0 - loss}


def plain_float(hp):
    return (hp["x"] - 0.3) ** 2


def raise_when_large(hp):
    if hp["x"] > 0.5:
        raise ValueError(f"x too large: {hp['x']}")
    return {"loss": hp["x"]}


def always_raises(hp):
    raise RuntimeError("broken training script")


def missing_or_nan_objective(hp):
    if hp["x"] > 0.66:
        return {"accuracy": 1.0}
    if hp["x"] > 0.33:
        return {"loss": math.nan}
    return {"loss": hp["x"]}


def die_when_large(hp):
    if hp["x"] > 0.7:
        os._exit(3)
    return {"loss": hp["x"]}


def echo_static(hp):
    return {"loss": hp["x"] + hp["offset"], "epochs_seen": hp["epochs"]}


def plain_k(hp):
    return float(hp["k"]) + (0.0 if hp["opt"] == "a" else 0.5)


def sleepy(hp):
    import time

    time.sleep(0.4)
    return {"loss": hp["x"]}


def sleepy_short(hp):
    import time

    time.sleep(0.01)
    return {"loss": hp["x"]}


def curve(hp):
    """Reports one step per epoch (loss = x + 1/epoch) and returns nothing: the objective is the
    last reported value."""
    import amtlib

    for epoch in range(1, hp["epochs"] + 1):
        amtlib.report(loss=hp["x"] + 1.0 / epoch, epoch_seen=float(epoch))


def curve_catching(hp):
    """Like `curve`, but catches TrialStopped (to "save a checkpoint") and returns its last loss."""
    import amtlib

    loss = None
    for epoch in range(1, hp["epochs"] + 1):
        loss = hp["x"] + 1.0 / epoch
        try:
            amtlib.report(loss=loss)
        except amtlib.TrialStopped:
            return {"loss": loss, "stopped_at": float(epoch)}
    return {"loss": loss}


def checkpointed(hp):
    """Trains epoch by epoch from its checkpoint: resumes at resume_step + 1 and records, in the
    checkpoint, every epoch it trained (so a test can see none was trained twice)."""
    import json
    from pathlib import Path

    import amtlib

    job = amtlib.current_job()
    path = Path(job.checkpoint_dir) / "state.json"
    state = {"trained": []}
    if job.resume_step:
        state = json.loads(path.read_text())
        assert state["trained"][-1] == job.resume_step, (state, job.resume_step)
    for epoch in range(job.resume_step + 1, hp["epochs"] + 1):
        state["trained"].append(epoch)
        path.write_text(json.dumps(state))
        amtlib.report(loss=hp["x"] + 1.0 / epoch)


def slow_curve(hp):
    import time

    import amtlib

    for epoch in range(1, hp["epochs"] + 1):
        time.sleep(0.02)
        amtlib.report(loss=hp["x"] + 1.0 / epoch)


def curve_with_side_metric(hp):
    """Reports the objective and, in its own call, another metric each epoch."""
    import amtlib

    for epoch in range(1, hp["epochs"] + 1):
        amtlib.report(loss=hp["x"] + 1.0 / epoch)
        amtlib.report(lr=0.1 / epoch)


def curve_returning_zero(hp):
    """Catches TrialStopped and returns 0.0, which must not become a stopped job's objective."""
    import amtlib

    for epoch in range(1, hp["epochs"] + 1):
        try:
            amtlib.report(loss=hp["x"] + 1.0 / epoch)
        except amtlib.TrialStopped:
            break
    return 0.0


def accuracy_curve(hp):
    """A metric to maximise: accuracy = x * epoch / 3."""
    import amtlib

    for epoch in range(1, hp["epochs"] + 1):
        amtlib.report(acc=hp["x"] * epoch / 3.0)


def curve_every_fifth(hp):
    """Reports the loss every fifth epoch only (steps 5, 10, ...)."""
    import amtlib

    for epoch in range(5, hp["epochs"] + 1, 5):
        amtlib.report(loss=hp["x"] + 1.0 / epoch, step=epoch)


def reporting_sleeper(hp):
    """Reports every 0.1 s for far longer than the tests' time limits."""
    import time

    import amtlib

    for epoch in range(1, 1000):
        time.sleep(0.1)
        amtlib.report(loss=hp["x"] + 1.0 / epoch)


def interrupted_then_worse(hp):
    """Each new job is the best so far, except job 2's re-run: its first attempt is interrupted
    (Ctrl-C) at epoch 4, and the re-run reports 5 worse."""
    import os

    import amtlib

    job = amtlib.current_job()
    marker = os.path.join(hp["folder"], "interrupted")
    rerun = os.path.exists(marker)
    for epoch in range(1, hp["epochs"] + 1):
        penalty = 5.0 if job.index == 1 and rerun else 0.0
        amtlib.report(loss=1.0 / epoch - 0.01 * job.index + penalty)
        if job.index == 1 and epoch == 4 and not rerun:
            open(marker, "w").close()
            raise KeyboardInterrupt


def interrupts_the_tuner(hp):
    """Job 2 interrupts the tuner's main thread (as Ctrl-C would) while job 1 runs too, then both
    finish anyway."""
    import _thread
    import time

    import amtlib

    if amtlib.current_job().index == 1:
        time.sleep(0.2)  # the tuner is waiting for jobs 1 and 2 by now
        _thread.interrupt_main()
    time.sleep(0.4)
    return {"loss": hp["x"]}


def fails_after_resuming(hp):
    """Reports loss and a side metric; a promoted (resumed) job raises at once."""
    from pathlib import Path

    import amtlib

    job = amtlib.current_job()
    if job.resume_step:
        raise RuntimeError("lost the GPU")
    (Path(job.checkpoint_dir) / "weights").write_text("saved")
    for epoch in range(1, hp["epochs"] + 1):
        amtlib.report(loss=hp["x"] + 1.0 / epoch, other=float(epoch))


def diverges_above_half(hp):
    """The loss turns NaN at epoch 3 when x > 0.5; a side metric is infinite throughout."""
    import amtlib

    for epoch in range(1, hp["epochs"] + 1):
        loss = float("nan") if hp["x"] > 0.5 and epoch == 3 else hp["x"] + 1.0 / epoch
        amtlib.report(loss=loss, grad_norm=float("inf"))


def diverges_left(hp):
    """Fails at once for x < 0.25; elsewhere a bowl at (0.3, 0.7) that improves with epochs."""
    import amtlib

    for epoch in range(1, 10):
        if hp["x"] < 0.25:
            raise FloatingPointError("diverged")
        amtlib.report(loss=(hp["x"] - 0.3) ** 2 + (hp["y"] - 0.7) ** 2 + 0.5 / epoch)


def integer_curve(hp):
    """loss = x + 1/epoch, resuming after current_job().resume_step; its "checkpoint" is the
    last epoch trained (the loss needs no other state)."""
    from pathlib import Path

    import amtlib

    job = amtlib.current_job()
    for epoch in range(job.resume_step + 1, hp["epochs"] + 1):
        if job.checkpoint_dir is not None:
            (Path(job.checkpoint_dir) / "epoch").write_text(str(epoch))
        amtlib.report(loss=hp["x"] + 1.0 / epoch)


def silent_when_large(hp):
    """Returns at once for x <= 0.5; otherwise runs far past the tests' time limits, silently."""
    import time

    if hp["x"] > 0.5:
        time.sleep(60)
    return hp["x"]


def appends_to_static_list(hp):
    """Appends to the static list ``layers`` in place and returns its length (1 if untouched)."""
    hp["layers"].append(32)
    return float(len(hp["layers"]) - 1)


def raises_base_exception(hp):
    """Job 1 raises the BaseException named by the static hyperparameter ``exc``."""
    import amtlib

    if amtlib.current_job().index == 1:
        import asyncio

        kinds = {
            "KeyboardInterrupt": KeyboardInterrupt,
            "GeneratorExit": GeneratorExit,
            "CancelledError": asyncio.CancelledError,  # a BaseException since Python 3.8
        }
        raise kinds[hp["exc"]]("raised by the training code")
    return hp["x"]


def reports_then_dies(hp):
    """Reports three epochs, then its process exits without a word."""
    import os

    import amtlib

    for epoch in range(1, 4):
        amtlib.report(loss=hp["x"] + 1.0 / epoch, acc=0.5)
    os._exit(3)


def done_when_resumed(hp):
    """loss = x + 1/epoch; a resumed attempt returns at once, reporting nothing: its checkpoint
    says it already trained every epoch."""
    from pathlib import Path

    import amtlib

    job = amtlib.current_job()
    if job.resume_step > 0:
        return None
    (Path(job.checkpoint_dir) / "trained").write_text(str(hp["epochs"]))
    for epoch in range(1, hp["epochs"] + 1):
        amtlib.report(loss=hp["x"] + 1.0 / epoch)


def near_float_limit(hp):
    """The first four jobs report -1.7e308 (the median of four of them overflows a plain
    midpoint), the later ones 5.0, twice."""
    import amtlib

    value = -1.7e308 if amtlib.current_job().index < 4 else 5.0
    for _ in range(2):
        amtlib.report(loss=value)
    return value


def rung_one_by_index(hp):
    """Two epochs; epoch 1's loss is fixed by the job's index, so the jobs a promotion-mode
    Hyperband lets past rung 1 are known. Pauses leave a checkpoint."""
    import amtlib

    job = amtlib.current_job()
    loss = [5.0, 4.0, 1.0, 3.0, 2.0, 6.0][job.index]
    try:
        if job.resume_step == 0:
            amtlib.report(loss=loss)
        amtlib.report(loss=loss - 0.5)
    except amtlib.TrialStopped:
        with open(os.path.join(job.checkpoint_dir, "state"), "w") as f:
            f.write("epoch 1")


def curve_failing_to_save(hp):
    """Like `curve`, but its clean-up after TrialStopped (saving a checkpoint) raises."""
    import amtlib

    try:
        curve(hp)
    except amtlib.TrialStopped:
        raise OSError("disk full while saving the checkpoint") from None
