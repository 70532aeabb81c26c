"""The tamper-evident transfer log: entries as leaves of an RFC 6962 Merkle tree, signed checkpoints."""
