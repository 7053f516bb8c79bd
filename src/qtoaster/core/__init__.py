"""Pure value types every layer shares: addresses, envelopes, replies, outcomes, errors, clock.

The bottom layer: it imports nothing of qtoaster.
"""
