"""Write deploy/.env from deploy/.env.example with fresh random secrets (mode 0600).

    python3 deploy/gen_env.py deploy/.env

``<generate>`` becomes 64 random bytes, URL-safe base64 (86 characters: enough for Airflow's
JWT secret, and safe inside the connection URLs compose builds); ``<generate-fernet>`` becomes
a Fernet key (32 random bytes, URL-safe base64). Other lines are copied. It refuses to
overwrite an existing file: replacing the JWT secret, the Fernet key or the keyring passphrase
of a running installation breaks it (deploy/README.md). Secrets are written, never printed.
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from pathlib import Path

EXAMPLE = Path(__file__).with_name(".env.example")


def fill(template: str) -> str:
    lines = []
    for line in template.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            if value == "<generate>":
                value = secrets.token_urlsafe(64)
            elif value == "<generate-fernet>":
                value = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")
            line = f"{key}={value}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: gen_env.py PATH  (for example deploy/.env)\n")
        return 2
    target = Path(argv[0])
    content = fill(EXAMPLE.read_text(encoding="utf-8"))
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        sys.stderr.write(f"{target} exists: keep it (its secrets are in use) or move it away first\n")
        return 1
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(content)
    sys.stderr.write(f"wrote {target} (0600)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
