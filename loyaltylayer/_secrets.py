"""``Secret``: a string that does not show itself.

Tracebacks that capture local variables (``pytest --showlocals``, rich's ``show_locals``, Sentry)
print the ``repr`` of every local of every frame, and of everything inside them: a dict of
headers, a request body, a row of an input file. A value held as a :class:`Secret` prints as
``'***'`` there, wherever it ends up, while it stays an ordinary ``str`` for everything else:
``json.dumps``, aiohttp headers, ``==``, ``str()`` and f-strings (which give the plain text).

The SDK holds the client secret, access tokens, enrol tokens, card numbers, CVVs, JWEs, proxy
passwords and the cells of CLI input rows as secrets, wrapping each where it is made.
"""

from __future__ import annotations

from typing import SupportsIndex

__all__ = ["Secret", "as_secret"]


class Secret(str):
    """A ``str`` whose ``repr`` is ``'***'``; a slice of it is a secret too.

    Slices stay secret because a repr that shortens long strings (rich shows the first 80
    characters of a string) takes a slice first and shows that.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"

    def __getitem__(self, key: SupportsIndex | slice) -> str:
        return Secret(str.__getitem__(self, key))


def as_secret(value: object) -> object:
    """``value`` as a :class:`Secret` when it is a string; anything else unchanged (for attrs
    converters, whose validators then say what is wrong with a non-string)."""
    return Secret(value) if isinstance(value, str) and not isinstance(value, Secret) else value
