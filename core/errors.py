"""The one base class of the project's errors.

Every error raised for bad input or a job that cannot run as asked (a file that is not what it
should be, a preset that maps unknown joints, targets the solver cannot use, ...) derives from
VPoserError, so callers catch the same set everywhere: the Blender operators report its message
instead of a traceback, the scripts print it and exit. The message is written for the user: it
names the file, field or object and says what was expected. VPoserError is a ValueError, as the
project's errors were before they had a common base, so existing `except ValueError` still holds.

This module imports nothing, so the add-on can use it where PyTorch is missing.
"""

from __future__ import annotations


class VPoserError(ValueError):
    """Bad input or a job that cannot run as asked; the message names the problem for the user."""


class InsufficientMemoryError(VPoserError):
    """A job would need more memory than the machine has free; checked before allocating."""
