"""Prod's long-lived services: the compose project and the service manifests."""
