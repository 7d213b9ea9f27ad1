"""The application runtime the appliance simulates: node plan, cameras, models, HDMI sink, bridge, SDK."""
