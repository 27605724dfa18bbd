"""A code command for the conformance suite, reading an emulator's outbox: what a user would write for a mailbox.

Usage: ``python latest_outbox_code.py http://127.0.0.1:PORT``. Prints the newest code sent to
``$CONFORMANCE_DESTINATION``, or nothing when none was sent yet.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request


def main() -> int:
    """Print the newest code for the destination the suite names."""
    endpoint = sys.argv[1].rstrip("/")
    query = urllib.parse.urlencode({"destination": os.environ["CONFORMANCE_DESTINATION"]})
    with urllib.request.urlopen(f"{endpoint}/_outbox?{query}", timeout=5) as response:
        messages = json.loads(response.read())["messages"]
    if messages:
        # The whole message, not just the code: the suite must find the code in free text too.
        print(messages[-1]["message"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
