"""The long-running daemon: start-up, signals, reload, shutdown."""
