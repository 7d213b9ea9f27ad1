"""pytest plugin: smoke-test Panorama apps on the emulator (fixtures arrive with the device API)."""
