"""The Kopf layer: watches feed the cache, one reconciler runs fetch → decide → apply → status."""
