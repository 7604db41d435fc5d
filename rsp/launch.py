"""The console scripts of the distribution (``eim``, ``ipa``, ``fwbridge``, ``euicc``, ``smdpp``, ``rsp``).

One distribution installs every command, whatever extra was chosen: a device installs ``sgp32-stack[ipa]`` and
still gets an ``eim`` script. Each script first checks that the packages of its extra are importable and, when
they are not, says in one line which extra to install and exits 2 (the usage code), instead of a traceback from
deep inside the command (``ModuleNotFoundError: No module named 'prometheus_client'`` under ``eim serve``).
Then it runs the command's ``main()`` under :func:`rsp.cli_contract.guard`: no traceback for a closed pipe
(``| head -1``, exit 0) or Ctrl-C (exit 130), the contract of docs/cli.md.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable

#: command -> (extra, module that implements it, top-level modules of the extra it imports)
COMMANDS: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "rsp": (None, "rsp.cli", ()),
    "euicc": ("lab", "euicc.cli", ("cbor2",)),
    "fwbridge": ("ipa", "firmware_bridge.cli", ("serial", "serial_asyncio_fast")),
    "ipa": ("ipa", "ipa.cli", ("serial", "serial_asyncio_fast", "cbor2", "httpx", "aiocoap", "aiomqtt", "paho")),
    "eim": (
        "server",
        "eim.cli",
        ("fastapi", "starlette", "uvicorn", "httptools", "httpx", "prometheus_client", "aiocoap", "aiomqtt", "paho"),
    ),
    "smdpp": ("server", "smdpp.cli", ("starlette", "uvicorn", "httpx")),
}


def missing_modules(command: str, find_spec: Callable[[str], object] = importlib.util.find_spec) -> list[str]:
    """The modules ``command`` needs that cannot be imported here."""
    return [name for name in COMMANDS[command][2] if find_spec(name) is None]


def launch(command: str) -> int:
    extra, module, _ = COMMANDS[command]
    missing = missing_modules(command)
    if missing:
        print(
            f"{command}: this command needs the [{extra}] extra (missing: {', '.join(missing)}): "
            f"pip install 'sgp32-stack[{extra}]'",
            file=sys.stderr,
        )
        return 2
    from rsp.cli_contract import guard

    return guard(command, importlib.import_module(module).main)


def _entry(command: str) -> Callable[[], None]:
    def run() -> None:
        sys.exit(launch(command))

    run.__name__ = command
    return run


rsp = _entry("rsp")
euicc = _entry("euicc")
fwbridge = _entry("fwbridge")
ipa = _entry("ipa")
eim = _entry("eim")
smdpp = _entry("smdpp")
