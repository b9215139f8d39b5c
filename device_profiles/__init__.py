"""Built-in device profiles, one TOML per device kind."""
