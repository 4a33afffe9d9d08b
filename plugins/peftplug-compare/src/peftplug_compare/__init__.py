"""``peftplug compare``: every installed method trained and measured side by side.

``arguments`` parses the command line, ``plan`` picks the rows, ``runner`` runs each row in a
fresh process (``worker``: ``rows`` / ``peft_rows``, measuring with ``measure`` and
``training``) and writes ``report`` (JSON, Markdown), ``table`` and ``chart`` after every row.
"""
