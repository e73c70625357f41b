"""The desktop app. Only this subpackage imports Qt; it drives the engine through background workers."""
