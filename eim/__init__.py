"""eim package."""
