"""ESipa, eIM side (SGP.32 v1.2 §6.3, ESipa functions and their ASN.1 binding): the binding-agnostic
dispatcher and one module per ESipa function.

``EsipaDispatcher`` (``eim.esipa.dispatcher``) implements :class:`eim.interfaces.EsipaHandler`; the bindings in
``eim.bindings`` hand it the DER they received.
"""
