"""Sub-commands of the filmless command, one module per area."""
