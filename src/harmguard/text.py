"""What a URL and an @mention look like: one definition for the snapshot's grouping and the models' preprocessing."""

from __future__ import annotations

import re

URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
MENTION = re.compile(r"@\w+")
