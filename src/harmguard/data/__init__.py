"""Data: named datasets, readers for files and URIs, snapshots with their data version, validation."""
