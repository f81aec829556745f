"""ImageActions core: the ImageAction resource, its pipeline runner, stores and API."""
