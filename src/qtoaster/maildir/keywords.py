"""Flags in Maildir file names: the info ``:2,<letters>`` holds the system flags as
capitals (D F R S T; T is \\Deleted) and keywords as the lowercase letters a..z, each
mapped to its name by the folder's ``dovecot-keywords`` file (Dovecot's format,
``<index> <name>`` per line, index 0 = ``a``), so Dovecot reads the folder as it is.
Keywords beyond those 26 are kept in the UID state (uidstate ``k`` records).

Invariants: letters in the info are kept sorted (ASCII: capitals first), as Dovecot
writes them; capitals this module does not map (P "passed") survive every flag change;
a letter is allocated to a keyword only under the folder's UID-state lock and written
with write_atomic before any file name uses it.
"""

from __future__ import annotations

from collections.abc import Iterable

from qtoaster.maildir.imported import read_dovecot_keywords
from qtoaster.maildir.storeapi import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN, MailFs

KEYWORDS_FILE = "dovecot-keywords"
LETTER_FLAGS = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
FLAG_LETTERS = {flag: letter for letter, flag in LETTER_FLAGS.items()}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SMALL = 1 << 16


def info_of(name: str) -> str:
    """The letters after ``:2,`` ("" when none)."""
    _, sep, info = name.partition(":2,")
    return info if sep else ""


def with_info(name: str, info: str) -> str:
    return f"{name.partition(':')[0]}:2,{info}"


class Keywords:
    """One folder's letter table and a cache of letters -> flag set."""

    def __init__(self, fs: MailFs, folder: str) -> None:
        self.fs = fs
        self.file = f"{folder}/{KEYWORDS_FILE}" if folder else KEYWORDS_FILE
        self.names: dict[str, str] = {}  # letter -> keyword
        self.letters: dict[str, str] = {}  # keyword (case-folded) -> letter
        self._cache: dict[str, frozenset[str]] = {}
        self._raw: bytes | None = b"?"

    def load(self) -> None:
        data = self.fs.read_file(self.file, _SMALL)
        if data == self._raw:
            return
        self._raw = data
        table = read_dovecot_keywords(data or b"")
        self.names = {_LETTERS[index]: name for index, name in table.items()}
        self.letters = {name.casefold(): letter for letter, name in self.names.items()}
        self._cache = {}

    def flags(self, info: str, extra: tuple[str, ...] = ()) -> frozenset[str]:
        found = self._cache.get(info)
        if found is None:
            items = set()
            for char in info:
                flag = LETTER_FLAGS.get(char) or self.names.get(char)
                if flag is not None:
                    items.add(flag)
            found = frozenset(items)
            self._cache[info] = found
        return found | set(extra) if extra else found

    def encode(self, old_info: str, flags: Iterable[str]) -> tuple[str, tuple[str, ...]]:
        """(info letters, extra keywords) for ``flags``, keeping ``old_info``'s unmapped
        capitals; allocates letters for new keywords (call under the state lock)."""
        chars = {c for c in old_info if c.isupper() and c not in LETTER_FLAGS}
        extra: list[str] = []
        for flag in flags:
            letter = FLAG_LETTERS.get(flag)
            if letter is None:
                if flag.startswith("\\"):
                    continue  # \Recent and unknown system flags are not stored
                letter = self.letters.get(flag.casefold()) or self._allocate(flag)
            if letter is None:
                extra.append(flag)
            else:
                chars.add(letter)
        return "".join(sorted(chars)), tuple(sorted(set(extra)))

    def _allocate(self, keyword: str) -> str | None:
        self.load()  # another session may have allocated since
        if keyword.casefold() in self.letters:
            return self.letters[keyword.casefold()]
        free = [c for c in _LETTERS if c not in self.names]
        if not free or " " in keyword or "\n" in keyword:
            return None
        letter = free[0]
        self.names[letter] = keyword
        self.letters[keyword.casefold()] = letter
        body = "".join(f"{_LETTERS.index(c)} {self.names[c]}\n" for c in sorted(self.names))
        data = body.encode("utf-8", "surrogateescape")
        self.fs.write_atomic(self.file, data)
        self._raw = data
        self._cache = {}
        return letter
