"""ipa package."""
