"""Moved to ``valet.emulator.patching``; kept so ``tests.emulator.patching`` imports still work."""

from valet.emulator.patching import *  # noqa: F403
