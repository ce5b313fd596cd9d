"""Where a recipient goes: local domains and users, aliases, transport table, MX resolution."""
