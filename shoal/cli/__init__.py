"""The ``shoal`` command line: one module per noun."""
