"""One module per CLI command, each exposing a ``command``; see ``memrec_infer.cli``."""
