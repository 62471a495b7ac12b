"""Image vulnerability scanning: layer inventory, version order, OSV matching, severity.

The modules here are pure (no I/O beyond the bytes handed to them): `layers` streams one layer and
picks out the few files an inventory needs, `squash` applies OCI whiteouts across layers and
attributes packages to layers, `inventory` parses package databases, `versions` orders versions per
ecosystem, `osv` evaluates advisories and derives findings.
"""
