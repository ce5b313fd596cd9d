"""Mailwright: a durable, standards-correct mail transfer agent.

The package is laid out by the flow of a message: ``edge`` reads clients,
``smtp`` speaks the protocol (sans-I/O), ``policy`` decides, ``queue`` stores,
``routing`` and ``delivery`` move mail on, ``dsn`` reports back.
"""

__version__ = "0.1.0"
