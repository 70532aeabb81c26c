"""Identity: organisations, OAuth clients, people, the authorization server and the resource-server dependencies."""
