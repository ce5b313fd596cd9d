"""Pure data shared by every layer: addresses, replies, envelopes, queue ids, clocks.

Nothing in this package performs I/O.
"""
