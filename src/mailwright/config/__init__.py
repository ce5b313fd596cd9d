"""Configuration: the TOML schema (one place documents every setting) and its loader."""
