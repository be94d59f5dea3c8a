"""Wire formats that belong to neither side of a connection.

protocol.py is Shoal's client protocol (length-prefixed msgpack frames, pipelined by request
id, and its error codes). The server's client port (server/client_api.py) and the clients
(client/aio.py) both import it, so neither depends on the other."""
