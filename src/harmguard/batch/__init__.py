"""Batch scoring with Ray Data, and the committed Parquet output it writes."""
