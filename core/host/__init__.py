"""How plugins are found, registered and configured: hook specs, the plugin manager, the
component registry and plugin options."""
