"""A WHIP publisher built on aiortc, sending H.264 the way OBS does.

The video is encoded here with libx264 (through PyAV) and handed to aiortc pre-encoded, so the
stream has what OBS sends and a browser does not: High profile while the SDP offer says
42e01f, access-unit delimiters, keyframes split over several slices, SPS and PPS repeated before
every keyframe, and a fixed keyframe interval. Like OBS it ignores keyframe requests (PLI, FIR),
unless --keyframe-on-request makes it answer them the way a browser's encoder does. Audio is a
tone that aiortc encodes as Opus; with --beep, silence with a 50 ms beep at the start of every
second instead, and the video frame of every whole second white: a stream whose audio and video
say when they were captured, to measure A/V sync by. With --clock, every video frame shows its
own capture time (milliseconds since the Unix epoch, the low 32 bits) as two rows of 32 black or
white blocks across the top, the second row the complement of the first: the page that plays it
reads which moment is on screen (tests/media/sync.spec.mjs).

    python3 publish.py [--seconds N] [--no-delete] [--keyint FRAMES] [--keyframe-on-request] [--beep] [--clock] [--late-start] -- URL TOKEN

Prints `LIVE <location>` once the WHIP answer is applied, then `KEYFRAME REQUESTS <n>` (how many
PLI or FIR arrived) and `DONE` after the DELETE (or exits without them with --no-delete, like a
killed OBS). The peer connection has no ICE servers: nothing leaves the machine.
"""

import argparse
import asyncio
import fractions
import math
import struct
import sys
import time
import urllib.error
import urllib.request

import av
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

WIDTH, HEIGHT, FPS = 640, 360, 30
VIDEO_CLOCK = 90_000


class EncodedVideo(MediaStreamTrack):
    """Yields av.Packet objects: aiortc only packetizes them."""

    kind = "video"

    def __init__(self, keyint: int, flash: bool = False, clock: bool = False):
        super().__init__()
        self.flash = flash
        self.clock = clock
        self.codec = av.CodecContext.create("libx264", "w")
        self.codec.width, self.codec.height = WIDTH, HEIGHT
        self.codec.pix_fmt = "yuv420p"
        self.codec.time_base = fractions.Fraction(1, FPS)
        self.codec.framerate = fractions.Fraction(FPS, 1)
        # x264 signals the lowest profile its tools need: CABAC and 8x8 transforms make it High.
        self.codec.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:aud=1:slices=4:bframes=0"
            ":repeat-headers=1:cabac=1:8x8dct=1",
        }
        self.n = 0
        self.start = None
        self.pending = []
        self.requests = 0
        self.answer_requests = False
        self.keyframe_asked = False
        self.skip = 0

    def keyframe_request(self):
        """aiortc calls this on a PLI or FIR (its sender's hook for its own encoders)."""
        self.requests += 1
        self.keyframe_asked = self.answer_requests

    def frame(self) -> av.VideoFrame:
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        # A bar moving across a grey field: something to encode that changes every frame.
        luma = bytearray(b"\x60" * (WIDTH * HEIGHT))
        x = (self.n * 8) % WIDTH
        for y in range(HEIGHT):
            luma[y * WIDTH + x : y * WIDTH + min(x + 32, WIDTH)] = b"\xe0" * (min(x + 32, WIDTH) - x)
        if self.flash and self.n % FPS == 0:
            luma = bytearray(b"\xeb" * (WIDTH * HEIGHT))
        if self.clock:
            self.burn_capture_time(luma)
        frame.planes[0].update(bytes(luma))
        frame.planes[1].update(b"\x80" * (WIDTH * HEIGHT // 4))
        frame.planes[2].update(b"\x80" * (WIDTH * HEIGHT // 4))
        frame.pts = self.n
        frame.time_base = self.codec.time_base
        if self.keyframe_asked:
            frame.pict_type = av.video.frame.PictureType.I
            self.keyframe_asked = False
        return frame

    def burn_capture_time(self, luma: bytearray):
        """Writes this frame's capture time (when `recv` hands it on) into its top 48 rows."""
        ms = int((self.start + self.n / FPS) * 1000) & 0xFFFFFFFF
        block = WIDTH // 32
        for bit in range(32):
            one = (ms >> (31 - bit)) & 1
            for row, value in ((range(0, 24), one), (range(24, 48), 1 - one)):
                shade = b"\xeb" if value else b"\x10"
                for y in row:
                    luma[y * WIDTH + bit * block : y * WIDTH + (bit + 1) * block] = shade * block

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        packet = None
        # With --late-start the frames before `skip` are encoded but never sent.
        while packet is None or packet.pts < self.skip:
            while not self.pending:
                wait = self.start + self.n / FPS - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self.pending.extend(self.codec.encode(self.frame()))
                self.n += 1
            packet = self.pending.pop(0)
        packet.pts = packet.pts * VIDEO_CLOCK // FPS
        packet.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        return packet


class Tone(MediaStreamTrack):
    """A 440 Hz tone in 20 ms frames, paced in real time; or, with `beep`, a 1 kHz beep of 50 ms
    at the start of every second and silence between."""

    kind = "audio"

    def __init__(self, beep: bool = False):
        super().__init__()
        self.n = 0
        self.start = None
        self.beep = beep

    def sample(self, t: int) -> int:
        if not self.beep:
            return int(8000 * math.sin(2 * math.pi * 440 * t / 48000))
        return int(16000 * math.sin(2 * math.pi * 1000 * t / 48000)) if t % 48000 < 2400 else 0

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        wait = self.start + self.n * 0.02 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = b"".join(struct.pack("<h", self.sample(self.n * 960 + i)) for i in range(960))
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(samples)
        frame.sample_rate = 48000
        frame.pts = self.n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self.n += 1
        return frame


def request(method: str, url: str, token: str, body: bytes = b"", ctype: str = ""):
    req = urllib.request.Request(url, data=body or None, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, dict(r.headers), r.read()


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--no-delete", action="store_true")
    ap.add_argument("--keyint", type=int, default=FPS)
    ap.add_argument("--keyframe-on-request", action="store_true")
    ap.add_argument("--beep", action="store_true")
    ap.add_argument("--clock", action="store_true")
    # The first keyframe interval of video is never sent: the origin's first segment then starts
    # a keyframe interval into the media's clock (a decode time other than 0), as when a
    # publisher's first keyframe is lost.
    ap.add_argument("--late-start", action="store_true")
    args = ap.parse_args()

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = EncodedVideo(args.keyint, args.beep, args.clock)
    track.answer_requests = args.keyframe_on_request
    track.skip = args.keyint if args.late_start else 0
    video = pc.addTransceiver(track, direction="sendonly")
    # aiortc's keyframe flag only reaches encoders it runs itself; this track encodes its own.
    video.sender._send_keyframe = track.keyframe_request
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
    video.setCodecPreferences(h264)
    pc.addTransceiver(Tone(args.beep), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers before returning
    try:
        status, headers, answer = request(
            "POST", args.url, args.token, pc.localDescription.sdp.encode(), "application/sdp"
        )
    except urllib.error.HTTPError as e:
        print(f"WHIP POST failed: {e.code} {e.read().decode()}", flush=True)
        return 1
    location = headers.get("Location") or headers.get("location")
    assert status == 201, status
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.decode(), type="answer"))
    print(f"LIVE {location}", flush=True)

    await asyncio.sleep(args.seconds)
    if args.no_delete:
        # Like a killed OBS: no DELETE, no DTLS close alert; the process just stops sending.
        sys.stdout.flush()
        import os

        os._exit(0)
    base = args.url.split("/whip/")[0]
    status, _, _ = request("DELETE", base + location, args.token)
    assert status == 200, status
    await pc.close()
    print(f"KEYFRAME REQUESTS {track.requests}", flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
