"""``python -m emr.signing tsa PKI_DIR [PORT]``: run the development TSA/CRL server.

Prints its base URL on the first line, then serves until interrupted. Used
by the benchmark (a TSA in its own process, as in production) and demos.
"""

from __future__ import annotations

import sys

from .devserver import DevPkiServer


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3) or args[0] != "tsa":
        print("usage: python -m emr.signing tsa PKI_DIR [PORT]", file=sys.stderr)
        return 2
    server = DevPkiServer(args[1], port=int(args[2]) if len(args) > 2 else 0)
    print(server.url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
