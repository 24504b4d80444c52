"""The backend driver: pools, exports, connection info, capabilities."""
