"""The one error the bundle generator raises: what is wrong, for a person to fix."""


class BundleError(Exception):
    """Bad input (template, metadata, image, module); nothing has been written."""
