"""Test-only runner: the gateway as a real process (for the SIGKILL test).

``python -m tests.pacs_gateway.run_gateway PORT SPOOL ORTHANC_URL USER PASSWORD``
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from pacs_gateway import Gateway, GatewaySettings
from storage import OrthancStore


def main(argv: list[str]) -> None:
    port, spool, url, user, password = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = GatewaySettings(host="127.0.0.1", port=int(port), spool_dir=Path(spool), min_free_bytes=0,
                               retry_initial=0.1, retry_max=1.0, forwarders=2)
    Gateway(settings, OrthancStore(url, user, password)).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
