"""Moved to ``valet.emulator.store``; kept so ``tests.emulator.store`` imports still work."""

from valet.emulator.store import *  # noqa: F403
