"""Run in a child process: sign an envelope with a facility key generated on a SoftHSM2 token.

python-pkcs11 loads the PKCS#11 library once per process and SoftHSM2 reads
SOFTHSM2_CONF at that moment, so the token test gets a process of its own.
argv: work_dir pki_dir table.xml out.xml
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path


def main() -> int:
    work, pki_dir, table, out = (Path(a) for a in sys.argv[1:5])
    tokens = work / "tokens"
    tokens.mkdir(parents=True, exist_ok=True)
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "facility", "--pin", "123456", "--so-pin", "654321"],
        check=True,
        capture_output=True,
    )
    from emr.exports.envelope import build_envelope, sign_envelope
    from emr.exports.facility_key import open_token_key
    from emr.signing.pki import load_dev_pki
    from emr.signing.token import SOFTHSM_LIBRARY, enroll_dev_token_key

    enroll_dev_token_key(load_dev_pki(pki_dir), "facility", "123456", "facility-key", "Bệnh viện filmless (token)")
    with open_token_key(SOFTHSM_LIBRARY, "facility", "123456", "facility-key") as key:
        assert key.source == "pkcs11"
        env = build_envelope("79001", [("XML1", table.read_bytes())], datetime(2026, 11, 23))
        out.write_bytes(sign_envelope(env, key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
