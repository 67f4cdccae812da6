"""Daphne as the site (scripts/web.py) and each host's gateway
(scripts/host.Procfile) run it:

    python -m labs.webserver [daphne's own arguments] APPLICATION

The same as `daphne`, with one setting Daphne has no option for: how long a
websocket's peer has to answer our close frame (autobahn's close handshake
timeout). Autobahn waits 1 s, then resets the connection. A browser that has
not answered by then (a busy machine, a slow network) writes its answer into
a reset connection and reports 1006, an abnormal close, instead of our code:
4403 (not yours), 4404, or the codes lesson.js acts on, such as "your node is
served by its host's gateway" (labs/sockets.py). The browser tests saw this
on a loaded machine; a browser with 600 ms of round trip gets it every time
(tests/browser/test_slow_network.py). A peer that never answers now holds
its socket 10 s.
"""
from __future__ import annotations

import daphne.cli
import daphne.server

CLOSE_HANDSHAKE_SECONDS = 10.0


class Server(daphne.server.Server):
    def run(self):
        # Daphne makes its websocket factory inside run(), just before the
        # reactor starts; the option is set once it runs, before any socket
        # is served (each connection copies the factory's options).
        from twisted.internet import reactor
        reactor.callWhenRunning(self._set_websocket_options)
        super().run()

    def _set_websocket_options(self):
        self.ws_factory.setProtocolOptions(closeHandshakeTimeout=CLOSE_HANDSHAKE_SECONDS)


class CommandLineInterface(daphne.cli.CommandLineInterface):
    server_class = Server


if __name__ == "__main__":
    CommandLineInterface.entrypoint()
