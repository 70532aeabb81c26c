"""Identity, OAuth 2.0, access requests, licences and the cross-boundary transfer engine."""
