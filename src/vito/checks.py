"""Type checks for values read from files and the command line (JSON, YAML, CSV), shared by every reader.

Why not ``isinstance(value, (int, float))``: JSON ``true`` is a Python ``bool``, which is an ``int``, and NaN or
infinity pass as floats; a setting or an annotation holding one of them would be used as a number.
"""

from __future__ import annotations

import math
from typing import Any


def integer(value: Any) -> bool:
    """A whole number (not a bool, a float or a string): what ids and counts must be."""
    return isinstance(value, int) and not isinstance(value, bool)


def finite_number(value: Any) -> bool:
    """An int or float that is finite (not a bool, a string, NaN or inf)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
