"""Configuration: settings from the environment, the connections file (connections and callers), reload."""
