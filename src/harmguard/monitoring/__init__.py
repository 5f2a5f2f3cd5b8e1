"""Live traffic watched: the traffic record, drift against a reference, the review queue, retention.

The traffic record (``traffic``: the recorder; ``keys``: item ids; ``parts``: layout, reading, compaction), the
reference stored at registration (``reference``), drift checks (``drift``, ``monitor``) and their report
(``report``), the review queue (``review_queue``), retention (``purge``), and the commands the CLI calls
(``commands``).

``traffic`` and ``keys`` are what a server imports: a recorder and its key.
"""
