"""Golden files (package data): ``<policy>.jsonl``, short synthetic labeled texts (harmguard.promotion.golden)."""
