"""Firmware bridge: APDUs to an eUICC through a cellular modem's AT port, and a virtual modem."""
