"""Built-in plugins: each module here not starting with '_' is loaded as a plugin."""
