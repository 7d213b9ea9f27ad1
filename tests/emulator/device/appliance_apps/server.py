"""An HTTP server on the port named by PORT, answering with the hostname."""

import os
import socket
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {socket.gethostname()}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        print("server:", fmt % args, flush=True)


server = HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler)
print(f"server: listening on {os.environ['PORT']}", flush=True)
server.serve_forever()
