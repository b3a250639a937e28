"""Application data volumes on the host (adapters behind :class:`dsm_tr181.lcm.ports.Volumes`)."""
