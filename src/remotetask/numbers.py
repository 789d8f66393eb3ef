"""The one check of the numbers callers hand in (delays, times, limits).

Every layer (the service, cron schedules, the JSON API, XML-RPC) checks a
number with ``checkNumber`` so that a value of any size, NaN or an infinity
gets the same clear error naming the field, and never an ``OverflowError``
from somewhere deeper (a 400-digit integer can not become a float).
"""
import math
import reprlib

from remotetask.interfaces import InvalidInputError


def isInt(value):
    """True for an integer that is not a bool (JSON and XML-RPC both send
    booleans that Python counts as integers)."""
    return isinstance(value, int) and not isinstance(value, bool)


def isNumber(value):
    """True for an int or a float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def checkNumber(name, value, low=None, integer=False, allowLow=True,
                high=None, integral=False, infinite=False,
                error=InvalidInputError):
    """``value`` as a finite float (an int if ``integer``), or ``error``
    naming ``name``.

    ``low``/``high`` bound it (``allowLow=False``: it must be above
    ``low``); ``integral`` also takes a float with no fraction (2.0) as an
    integer, as JSON clients send them; ``infinite`` lets +/-infinity pass
    (never NaN).
    """
    if not isNumber(value):
        raise error('%s must be %s, not %s' % (
            name, 'an integer' if integer else 'a number',
            shortRepr(value)))
    if isinstance(value, float) and not math.isfinite(value) and not (
            infinite and not integer and not math.isnan(value)):
        raise error('%s must be a finite number, not %r' % (name, value))
    if integer and isinstance(value, float):
        if not (integral and value.is_integer()):
            raise error('%s must be an integer, not %r' % (name, value))
        value = int(value)
    if not integer:
        try:
            value = float(value)
        except OverflowError:
            raise error('%s must be a finite number, not %s'
                        % (name, shortRepr(value)))
    if low is not None and (value < low or (value == low and not allowLow)):
        raise error('%s must be %s %s, not %s' % (
            name, '>=' if allowLow else '>', low, shortRepr(value)))
    if high is not None and value > high:
        raise error('%s must be <= %s, not %s'
                    % (name, high, shortRepr(value)))
    return value


def shortRepr(value, limit=60):
    """A repr of ``value`` no longer than ``limit`` characters (a huge
    integer or a deeply nested list is not repeated back whole)."""
    if isInt(value) and abs(value) > 10 ** 30:
        # (str() of an integer of more than 4300 digits raises)
        return 'an integer of about %d digits' % (
            value.bit_length() * 0.30103 + 1)
    short = reprlib.Repr()
    short.maxstring = short.maxother = short.maxlong = limit
    return short.repr(value)
