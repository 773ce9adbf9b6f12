"""Moved to ``valet.emulator.server``; kept so ``tests.emulator.server`` imports still work."""

from valet.emulator.server import *  # noqa: F403
