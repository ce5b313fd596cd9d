"""The durable mail queue: the store interface, its backends, the single writer, the spool.

Only ``queue.writer.QueueWriter`` changes queue state; everything else reads.
"""
