"""The decision that counts: per item, the latest event by ``decided_at`` (then ``event_id``); appeals overturn.

Every event stays in the history; ``resolve_latest`` only chooses. An event covering some of a policy's categories
leaves the others unknown: an exclusive policy cannot train on it (``covers_all``), a multilabel one masks them.
"""

from __future__ import annotations

import pandas as pd


def resolve_latest(events: pd.DataFrame, categories: list[str]) -> pd.DataFrame:
    """One row per item: its latest decision, how many decisions it had, whether one was overturned.

    Args:
        events: Imported events (``labels.store.load_events``).
        categories: The policy's categories.

    Returns:
        Columns of the latest event plus ``decisions`` (events on the item), ``overturned`` (an earlier decision on
        it was overturned) and ``covers_all`` (its labels name every category).
    """
    if events.empty:
        return events.assign(decisions=pd.Series(dtype=int), overturned=pd.Series(dtype=bool), covers_all=False)
    ordered = events.sort_values(["item_id", "decided_at", "event_id"])
    latest = ordered.groupby("item_id", sort=True).tail(1).set_index("item_id")
    counts = ordered.groupby("item_id").size()
    overturned_ids = set(events["overturns"].dropna())
    overturned = ordered.assign(o=ordered["event_id"].isin(overturned_ids)).groupby("item_id")["o"].any()
    latest = latest.assign(decisions=counts, overturned=overturned)
    latest["covers_all"] = latest["labels"].map(lambda d: set(categories) <= set(d))
    return latest.reset_index()
