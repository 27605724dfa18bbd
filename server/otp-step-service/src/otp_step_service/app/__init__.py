"""The composition root: builds the service from settings, the only code that knows every concrete adapter."""
