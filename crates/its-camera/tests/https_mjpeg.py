#!/usr/bin/python3
"""HTTPS MJPEG test server: serves FRAME (a JPEG file) as a multipart/x-mixed-replace stream
over TLS with CERT and KEY, 20 parts a second, on 127.0.0.1:PORT. Prints "ready".

Usage: https_mjpeg.py PORT FRAME CERT KEY
"""
import http.server
import ssl
import sys
import time


def main():
    port, frame_path, cert, key = sys.argv[1:5]
    frame = open(frame_path, "rb").read()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                while True:
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                    self.wfile.write(head % len(frame))
                    self.wfile.write(frame + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
