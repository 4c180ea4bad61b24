"""The ``ftbot`` subcommands, one module per area. ``bot.cli`` registers them."""
