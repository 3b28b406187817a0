"""Task drivers: one interface (``base.Driver``), one module per driver."""
