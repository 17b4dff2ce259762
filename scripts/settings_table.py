"""Print (or --write into README.md) the table of FILMLESS_* variables.

The table is generated from filmless.settings.VARIABLES so the README and
the code cannot drift apart; a test checks they match.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from filmless.settings import VARIABLES  # noqa: E402

START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def table() -> str:
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, (default, meaning) in VARIABLES.items():
        shown = f"`{default}`" if default else "(unset)"
        rows.append(f"| `{name}` | {shown} | {meaning} |")
    return "\n".join(rows)


def main() -> int:
    text = table()
    if "--write" in sys.argv:
        readme = Path(__file__).resolve().parents[1] / "README.md"
        content = readme.read_text("utf-8")
        head, _, rest = content.partition(START)
        _, _, tail = rest.partition(END)
        readme.write_text(f"{head}{START}\n{text}\n{END}{tail}", "utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
