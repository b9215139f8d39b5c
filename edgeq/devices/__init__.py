"""Devices: where a device is (profiles), how edgeq talks to it (transports), and deploy."""
