"""``python -m actors.bench _bare provider|router URL [--uvloop]``: one bare role, until killed.

The core section's multi-process layout starts its bare roles this way (``measure.spawn``). The
bench itself is ``llmbus bench`` (``actors.bench.main.main``).
"""

from __future__ import annotations

import sys

import anyio

from actors.bench.bare import ROLES, bare_role


def _child(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] != "_bare" or argv[1] not in ROLES:
        print("usage: python -m actors.bench _bare provider|router URL [--uvloop]", file=sys.stderr)
        return 2
    anyio.run(bare_role, argv[1], argv[2], backend="asyncio",
              backend_options={"use_uvloop": True} if "--uvloop" in argv else {})
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
