"""Offline and on-device bundle building: ``dsm-bundle generate`` (an OCI image + an RDK platform
template → a platform-specific DU archive, as rdkcentral/BundleGen makes them) and
``dsm-bundle compose`` (modules → a DU archive). Imports no adapter but the image packager,
which it drives to turn an image into a root filesystem.
"""
