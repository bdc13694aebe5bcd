"""The package's version, in a module of its own: the CLI, the API and storage
read it from here without importing the package root (which pulls in the
whole public API), and setup.cfg reads it statically."""

__version__ = "0.1.0"
