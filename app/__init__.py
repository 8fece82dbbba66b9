"""videojobs: asynchronous AI video generation service."""
