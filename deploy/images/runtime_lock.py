"""Print the part of requirements.lock that gbadz needs at run time, hashes and all.

requirements.lock pins the runtime dependencies and the dev group together (``make lock``).
An image must install the first and none of the second, and must still install from the
lock's own hashes. uv writes, under every pinned package, who asked for it (``# via``): the
project (``gbadz (pyproject.toml)``), a dependency group (``gbadz (pyproject.toml:dev)``) or
another package. The runtime set is the closure of the project's own requirements over those
edges; each kept entry is copied verbatim (version, marker, every ``--hash``).

    python runtime_lock.py requirements.lock [--group NAME ...] > runtime.lock
    python runtime_lock.py requirements.lock --only uv > uv.lock

Standard library only: it runs in a bare ``python:3.11-slim`` build stage.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==\S+")
_PROJECT = re.compile(r"^(\S+) \(pyproject\.toml(?::([A-Za-z0-9_-]+))?\)$")


def canonical(name: str) -> str:
    """PEP 503 normalisation, the form uv writes in ``# via`` lines."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Entry:
    name: str
    lines: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)


def parse(text: str) -> dict[str, Entry]:
    """Entries of a ``uv pip compile --generate-hashes`` output, by canonical name."""
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    in_via = False
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            current = Entry(canonical(match.group(1)), [line])
            if current.name in entries:
                raise ValueError(f"{current.name} is pinned twice")
            entries[current.name] = current
            in_via = False
            continue
        if current is None or not line.startswith("    "):
            in_via = False
            continue
        stripped = line.strip()
        if stripped.startswith("--hash="):
            current.lines.append(line)
        elif stripped == "# via":
            in_via = True
        elif stripped.startswith("# via "):
            current.via.append(stripped.removeprefix("# via ").strip())
            in_via = False
        elif in_via and stripped.startswith("#   "):
            current.via.append(stripped.removeprefix("#   ").strip())
    for entry in entries.values():
        if not any(line.strip().startswith("--hash=") for line in entry.lines):
            raise ValueError(f"{entry.name} has no --hash: the lock must be compiled with --generate-hashes")
    return entries


def runtime_names(entries: dict[str, Entry], groups: frozenset[str] = frozenset()) -> set[str]:
    """Names reachable from the project's dependencies (and the named groups), never the others."""
    keep: set[str] = set()
    changed = True
    while changed:
        changed = False
        for entry in entries.values():
            if entry.name in keep:
                continue
            for parent in entry.via:
                project = _PROJECT.match(parent)
                if project:
                    wanted = project.group(2) is None or project.group(2) in groups
                else:
                    wanted = canonical(parent.split("[", 1)[0]) in keep
                if wanted:
                    keep.add(entry.name)
                    changed = True
                    break
    return keep


def render(entries: dict[str, Entry], names: set[str]) -> str:
    return "".join("\n".join(entries[n].lines) + "\n" for n in sorted(names))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("lock", type=Path)
    parser.add_argument("--group", action="append", default=[], help="also keep this dependency group")
    parser.add_argument("--only", action="append", default=[], help="print only these packages")
    args = parser.parse_args(argv)
    entries = parse(args.lock.read_text(encoding="utf-8"))
    if args.only:
        names = {canonical(n) for n in args.only}
        missing = names - entries.keys()
        if missing:
            parser.error(f"not in the lock: {', '.join(sorted(missing))}")
    else:
        names = runtime_names(entries, frozenset(args.group))
        if not names:
            parser.error(
                "no package of the project's own dependencies found: is this a uv lock with annotations?"
            )
    sys.stdout.write(render(entries, names))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
