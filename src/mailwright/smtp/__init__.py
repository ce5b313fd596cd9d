"""The SMTP/LMTP protocol, sans-I/O: bytes in, events and replies out.

Nothing here touches a socket; the asyncio edge, the delivery client, ``sendmail -bs``
and the tests all drive the same state machines.
"""
