#!/usr/bin/python3
"""RTSP test server: GStreamer's rtsp-server streaming a live H.264 test pattern.

Usage: rtsp_server.py PORT [WIDTH HEIGHT FPS]. Serves rtsp://127.0.0.1:PORT/test (TCP and
UDP transports). Prints "ready" once listening. Needs the Debian packages gstreamer1.0-rtsp,
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-ugly (x264enc) and python3-gi.
"""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main():
    port = sys.argv[1]
    width, height, fps = (sys.argv[2:5] + ["320", "240", "10"][len(sys.argv[2:5]):])
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},"
        f"framerate={fps}/1 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
        "! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    # One pipeline per client: TCP and UDP clients never share (and race for) a media.
    factory.set_shared(False)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print("cannot listen", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
