"""A real RTSP server (GStreamer's gst-rtsp-server) for the source-recovery tests.

Run with Debian's python3 (python3-gi, gir1.2-gst-rtsp-server-1.0):
``python3 rtsp_server.py PORT`` serves a moving test pattern as RTP/JPEG at
rtsp://127.0.0.1:PORT/live until it is killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer

Gst.init(None)
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(sys.argv[1])
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch("( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=320,"
                   "height=240,framerate=15/1 ! jpegenc ! rtpjpegpay name=pay0 pt=26 )")
factory.set_shared(True)
server.get_mount_points().add_factory("/live", factory)
server.attach(None)
print("ready", flush=True)
GLib.MainLoop().run()
