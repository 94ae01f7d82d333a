"""One way for every operator to refuse: the project's errors (core.errors.VPoserError and its
subclasses, the add-on's TargetError, SourceError and DeviceError among them), file-system errors
and running out of memory become an ERROR report and a cancelled run instead of a traceback.

Operators do everything that can fail before they change the scene, so a refused run leaves it
as it was; an error raised after a change would leave that change in place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import bpy

from ..core.errors import VPoserError

REPORTED: tuple[type[BaseException], ...] = (VPoserError, OSError, MemoryError)

Method = TypeVar("Method", bound=Callable[..., set[str]])


def reports_errors(failure: str) -> Callable[[Method], Method]:
    """Decorate an operator's execute, invoke or modal: a REPORTED error is reported as
    "<failure>: <message>" and the method returns {'CANCELLED'}. `failure` says what could not be
    done; "{body}" in it is replaced by the name of the body the operator works on (the active
    body, or the body the active target drives) and "{op.<property>}" by the operator's property."""

    def decorate(method: Method) -> Method:
        def reported(self: bpy.types.Operator, context: bpy.types.Context, *args: object) -> set[str]:
            try:
                return method(self, context, *args)
            except REPORTED as error:
                self.report({"ERROR"}, f"{_failure(failure, self, context)}: {describe(error)}")
                return {"CANCELLED"}

        # Blender checks the argument count of execute (self, context) and invoke/modal (+ event).
        if method.__code__.co_argcount == 2:
            def run(self: bpy.types.Operator, context: bpy.types.Context) -> set[str]:
                return reported(self, context)
        else:
            def run(self: bpy.types.Operator, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
                return reported(self, context, event)
        run.reports_errors = failure  # type: ignore[attr-defined]  # tests check every operator has it
        return functools.wraps(method)(run)  # type: ignore[return-value]

    return decorate


def describe(error: BaseException) -> str:
    """The user-facing text of a REPORTED error: the project's own message; for a file-system error
    the file and the system's reason; for memory, what ran out."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    if isinstance(error, MemoryError):
        return f"not enough memory ({error})" if str(error) else "not enough memory"
    return str(error)


def _failure(failure: str, operator: bpy.types.Operator, context: bpy.types.Context) -> str:
    if "{body}" not in failure:
        return failure.format(op=operator)
    from .targets import driven_body

    rig = driven_body(context)
    return failure.format(op=operator, body=rig.name if rig is not None else "the body")
