"""SGP.32 v1.2 procedures of the IPA, one module each, named after the procedure (section in each docstring).

All procedures take an :class:`ipa.procedures.context.IpaContext`: the ES10 client, the ESipa transport, the
persistent state, the configuration. They own no loop and no I/O objects; the agent wires them.
"""
