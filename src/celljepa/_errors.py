"""Exception and warning types raised by celljepa."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass


class CelljepaError(Exception):
    """Base class of every error celljepa raises on purpose (bad input, bad configuration)."""


class InputError(CelljepaError, ValueError):
    """Bad user input: a missing key, an unreadable file, an impossible option."""


class SplitError(CelljepaError, ValueError):
    """A split that cannot be made (no test groups in a fold, an unknown split name)."""


class BackendUnavailableError(CelljepaError, RuntimeError):
    """A compiled backend was requested explicitly but is not built or has no device."""


class PeerError(CelljepaError, RuntimeError):
    """A peer tool (scGen, GEARS, CPA, ...) failed in its own environment; the message names its log."""


def storage_error(err: BaseException) -> str | None:
    """A named message for an error of the storage a run writes to (disk full, read-only, no permission), else None.

    Python, h5py and torch report these in their own words (``OSError: [Errno 28]``, ``Can't write data``,
    ``file write failed``); the command line turns them into one message that says what happened and what to do.
    Run folders are swapped in only when complete, so the message can say that nothing was half-written.
    """
    import errno

    text = str(err)
    code = getattr(err, "errno", None)
    where = getattr(err, "filename", None)
    at = f" at '{where}'" if where else ""
    if code in (errno.ENOSPC, errno.EDQUOT) or "No space left" in text or "file write failed" in text:
        return (
            f"no space left on the device{at} (disk full or quota reached). Run folders are swapped in only "
            "when complete, so no finished run was changed and nothing half-written is kept. Fix: free space, "
            "or pass an --out on another disk."
        )
    if code == errno.EROFS or "Read-only file system" in text:
        return (
            f"the file system is read-only{at}. Nothing was written. Fix: pass an --out on a file system you "
            "can write to."
        )
    if code == errno.EACCES or isinstance(err, PermissionError):
        return f"permission denied{at}. Nothing was written. Fix: pass an --out you can write to."
    return None


class CelljepaWarning(UserWarning):
    """Warnings about data or configuration that celljepa can continue with."""


@dataclass(frozen=True)
class Violation:
    """One broken rule of the data contract.

    Attributes
    ----------
    rule
        Short name of the rule (``"required_column"``, ``"controls_per_context"``, ...).
    where
        The column, key or value that breaks the rule (``"obs['context_id']"``, ``"uns['dataset_id']"``).
    message
        What is wrong, with the offending values.
    fix
        What to do about it.
    """

    rule: str
    where: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.rule}] {self.where}: {self.message} Fix: {self.fix}"


class ContractError(CelljepaError, ValueError):
    """An AnnData object breaks the celljepa data contract.

    ``violations`` holds every broken rule (not only the first), each naming the column or value
    and the fix.
    """

    def __init__(self, violations: Sequence[Violation], source: str | None = None):
        self.violations = list(violations)
        self.source = source
        head = f"{len(self.violations)} data contract violation(s)"
        if source:
            head += f" in {source}"
        lines = [head + ":"] + [f"  {i}. {v}" for i, v in enumerate(self.violations, 1)]
        super().__init__("\n".join(lines))


def renamed_argument(function: str, old: str, old_value, new: str, new_value, default):
    """Resolve a deprecated keyword alias: warn (FutureWarning naming the new keyword) and return the value to use."""
    if old_value is None:
        return new_value
    warnings.warn(
        f"{function}({old}=...) is deprecated and will be removed; use {new}={old_value!r} instead.",
        FutureWarning,
        stacklevel=3,
    )
    if new_value != default and new_value != old_value:
        raise InputError(f"{function}: {old}={old_value!r} and {new}={new_value!r} disagree; pass only {new}=.")
    return old_value
