"""Key management, column encryption, pseudonymisation and signing."""
