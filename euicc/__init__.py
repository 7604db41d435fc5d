"""euicc package."""
