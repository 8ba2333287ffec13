"""Find tokens in files (``kbai scan``): walk a tree, skip version-control folders and binary files.

A finding keeps the digest and the display prefix, never the token: what is printed or passed on
can identify a token without exposing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kbai import tokenformat as fmt

SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs"})
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Finding:
    path: Path
    line: int
    prefix: str
    digest: str


def iter_files(root: Path) -> Iterator[Path]:
    """Regular files under ``root`` (or ``root`` itself), in a stable order; symlinks are not followed."""
    if root.is_file():
        yield root
        return
    for here, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            path = Path(here, name)
            if path.is_file() and not path.is_symlink():
                yield path


def is_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KiB means binary, as git and grep decide."""
    with open(path, "rb") as f:
        return b"\0" in f.read(_SNIFF_BYTES)


def scan_file(path: Path) -> Iterator[Finding]:
    """Every token in a text file, with its 1-based line number. Binary files yield nothing."""
    if is_binary(path):
        return
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for number, line in enumerate(f, start=1):
            if fmt.PREFIX not in line:
                continue
            for _, token in fmt.find_all(line):
                yield Finding(path, number, fmt.display_prefix(token), fmt.digest(token))
