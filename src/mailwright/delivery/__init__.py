"""Delivery agents: smtp, lmtp, local mbox and maildir, pipe, file.

Each takes one message and the recipients that share a next hop, and returns one
result per recipient.
"""
