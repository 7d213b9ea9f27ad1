"""The application runtime the appliance simulates: node plan, cameras, model backends, HDMI sink, bridge, SDK."""
