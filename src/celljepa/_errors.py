"""Exception and warning types raised by celljepa."""

from __future__ import annotations

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
