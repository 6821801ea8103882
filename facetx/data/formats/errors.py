"""The one exception type of the format readers."""

from __future__ import annotations

from facetx.errors import UserError


class DataFormatError(UserError, ValueError):
    """A data set on disk does not match its format. The message is one line naming the file and what was wrong,
    e.g. ``"list.txt: line 12: expected 207 fields (...), got 205"``."""


class CorruptImageError(DataFormatError):
    """One image payload cannot be decoded. Readers skip these or fail, as their ``on_corrupt`` says."""
