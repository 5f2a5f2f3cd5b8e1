"""Moderation decisions coming back as labels: import, resolution (the latest decision counts), takedowns."""
