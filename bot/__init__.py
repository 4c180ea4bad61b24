"""ftbot's user-facing surfaces: the ``ftbot`` CLI, the Slack app and the local console.

Everything here talks to the engine through ``engine``'s public API only.
"""
