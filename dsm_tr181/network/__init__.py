"""Per-EU networking on the host (adapters behind :class:`dsm_tr181.lcm.ports.Network`)."""
