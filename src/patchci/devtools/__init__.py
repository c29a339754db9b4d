"""Development tools shipped with patchci: a local Patchwork emulator for the demo and tests."""
