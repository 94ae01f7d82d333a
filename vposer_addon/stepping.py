"""Operators whose job runs in steps (Retarget, Fit to a video): execute runs every step with the
window manager's progress; invoke starts a modal run, one step per timer event, so Blender stays
responsive and Esc cancels. A job changes nothing before its last step, so a cancelled run leaves
the scene as it was. A job has `total` and `done` (steps) and `step()` (False once all are done).

Each operator keeps its own execute / invoke / modal (each decorated with reports_errors) and
calls these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import bpy


class SteppedJob(Protocol):
    total: int
    done: int

    def step(self) -> bool: ...


class ProgressSteps:
    """A job's `step` over an iterator of (done, total) pairs, as core's Retarget and Fit2DRun give."""

    def __init__(self, steps, total: int) -> None:
        self._steps = iter(steps)
        self.total, self.done = total, 0

    def step(self) -> bool:
        """The next step; False once all are done."""
        progress = next(self._steps, None)
        if progress is None:
            return False
        self.done = progress[0]
        return True


def run_all(context: bpy.types.Context, job: SteppedJob) -> None:
    """Every step at once, with the window manager's progress."""
    window_manager = context.window_manager
    window_manager.progress_begin(0, job.total)
    try:
        while job.step():
            window_manager.progress_update(job.done)
    finally:
        window_manager.progress_end()


def start_modal(operator: bpy.types.Operator, context: bpy.types.Context, job: SteppedJob) -> set[str]:
    """invoke's part: the job stepped by timer events from now on (see `modal_step`)."""
    operator._job = job
    window_manager = context.window_manager
    operator._timer = window_manager.event_timer_add(0.001, window=context.window)
    window_manager.modal_handler_add(operator)
    window_manager.progress_begin(0, job.total)
    return {"RUNNING_MODAL"}


def modal_step(operator: bpy.types.Operator, context: bpy.types.Context, event: bpy.types.Event,
               finish: Callable[[], set[str]], cancelled: str) -> set[str]:
    """modal's part: one step per timer event, then `finish()` (which writes the result); Esc stops
    before anything was written and reports `cancelled`."""
    if event.type == "ESC":
        end_modal(operator, context)
        operator.report({"WARNING"}, cancelled)
        return {"CANCELLED"}
    if event.type != "TIMER":
        return {"RUNNING_MODAL"}  # the scene must not change under the job
    try:
        if operator._job.step():
            context.window_manager.progress_update(operator._job.done)
            return {"RUNNING_MODAL"}
    except BaseException:
        end_modal(operator, context)
        raise
    end_modal(operator, context)
    return finish()


def end_modal(operator: bpy.types.Operator, context: bpy.types.Context) -> None:
    """The operator's cancel (Blender calls it too when it ends the modal run itself)."""
    window_manager = context.window_manager
    window_manager.event_timer_remove(operator._timer)
    window_manager.progress_end()
