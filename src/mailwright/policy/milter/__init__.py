"""The Sendmail mail-filter (milter) protocol, MTA side: codec, negotiation, client, hook."""
