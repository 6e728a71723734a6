"""Wave (accounting): GraphQL documents, response models and the typed httpx client."""
