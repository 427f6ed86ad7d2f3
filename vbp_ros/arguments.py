"""argparse types shared by the console scripts, the tools and the ROS executables alike."""

from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

T = TypeVar('T')


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'{text} is not a positive integer')
    return value


def unit_interval(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f'{text} is not between 0 and 1')
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f'{text} is not a finite number')
    return value


def int_from(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer from ``low`` to ``high``."""
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f'{text} is not an integer from {low} to {high}')
        return value
    parse.__name__ = f'integer from {low} to {high}'
    return parse


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0."""
    value = float(text)
    if not (math.isfinite(value) and value > 0.0):
        raise argparse.ArgumentTypeError(f'{text} is not a positive number')
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite number of 0 or more."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0.0):
        raise argparse.ArgumentTypeError(f'{text} is not a number of 0 or more')
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'{text} is not an integer of 0 or more')
    return value


def comma_separated(item: Callable[[str], T]) -> Callable[[str], list[T]]:
    """argparse type: a comma-separated list, each item read by the type ``item``."""
    def parse(text: str) -> list[T]:
        try:
            return [item(part.strip()) for part in text.split(',')]
        except ValueError as error:  # int('x'), float('x'): what argparse says of one value
            raise argparse.ArgumentTypeError(f'{text!r}: {error}') from None
    parse.__name__ = f'comma-separated {item.__name__.replace("_", " ")}'
    return parse
