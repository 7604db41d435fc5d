"""smdpp package."""
