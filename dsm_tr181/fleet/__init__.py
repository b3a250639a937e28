"""Fleet targeting: a package and spec repository that decides by device labels
(``dsm-fleet serve``), and the device-side client that converges the daemon to it
through the TR-181 tree's own InstallDU()/Update()/Uninstall()/SetRequestedState().

``model`` and ``matching`` are pure (no I/O); ``repository`` is the storage port with
``sqlite_repo`` and ``postgres_repo`` behind it; ``server`` is the HTTP API; ``cli`` is
``dsm-fleet``; ``agent`` runs inside the daemon when ``[fleet] enable = true``.
"""
