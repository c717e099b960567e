"""`@value`: a small immutable record that is quick to make.

A frozen dataclass sets each field through `object.__setattr__`, which makes it three to
four times as slow to construct as a plain one; the rules make a dozen such records per
reading. A `@value` class is a plain slotted dataclass at run time and frozen to the type
checker (mypy refuses assignments to its fields), with a hash like a frozen dataclass's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(cls: type[_T]) -> type[_T]:
    """Make `cls` a slotted dataclass that mypy treats as frozen."""
    return dataclass(slots=True, unsafe_hash=True)(cls)
