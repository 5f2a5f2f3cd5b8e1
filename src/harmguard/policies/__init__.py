"""Shipped policies (package data)."""
