"""dsm-tr181: a TR-181 Device.SoftwareModules. provider for RDK-B."""

__version__ = "0.1.0"
