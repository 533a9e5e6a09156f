"""One module per teaching notebook: its cells, in order."""
