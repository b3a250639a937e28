"""Tools around dsm-tr181 that are not part of the product: the README demo and the
sample bundle and image builders used by the demo, the tests and the benches."""
