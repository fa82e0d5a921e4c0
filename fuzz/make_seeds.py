#!/usr/bin/env python3
"""Writes the seed corpus, fuzz/corpus/<target>/, from the repo's own fixtures and from
packets built here. Re-run after changing a fixture or the record format (fuzz/src/lib.rs):
the seeds are deterministic, named after what they hold.

    python3 fuzz/make_seeds.py
"""
import glob
import os
import re
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def record(flags, advance, data):
    """fuzz/src/lib.rs: [flags][advance][len u16 BE][data]; advance < 250 is 4 ms units."""
    if isinstance(data, str):
        data = data.encode()
    return struct.pack(">BBH", flags, advance, len(data)) + data


def crlf(text):
    return "\r\n".join(text.split("\n"))


# ---------------------------------------------------------------------------------- SIP
SIPP_VALUES = {
    "service": "803164", "remote_ip": "192.0.2.1", "remote_port": "5060",
    "local_ip": "192.0.2.10", "local_port": "5060", "transport": "UDP",
    "branch": "z9hG4bK-sipp-1", "branch-2": "z9hG4bK-sipp-2", "pid": "4242",
    "call_number": "1", "call_id": "1-4242@192.0.2.10", "media_ip": "192.0.2.10",
    "media_port": "6000", "media_ip_type": "4", "local_ip_type": "4",
    "peer_tag_param": ";tag=verde-1", "next_url": "sip:803164@192.0.2.1:5060",
    "rtpstream_audio_port": "6000", "last_cseq_number": "1",
}
LAST = {
    "Via": "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-verde-7;rport=5060",
    "From": "From: <sip:verde@192.0.2.1>;tag=verde-1",
    "To": "To: <sip:agent@192.0.2.10>;tag=4242SIPpTag011",
    "Call-ID": "Call-ID: verde-call-9@192.0.2.1",
    "CSeq": "CSeq: 2 BYE",
    "Record-Route": "Record-Route: <sip:192.0.2.1;lr>",
    "Contact": "Contact: <sip:verde@192.0.2.1:5060>",
}


def sipp_messages():
    """Every <send> of the SIPp scenarios in tests/fixtures/sipp, keywords filled in."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/sipp/*.xml"))):
        text = open(path, encoding="latin-1").read()
        for i, block in enumerate(re.findall(r"<!\[CDATA\[(.*?)\]\]>", text, re.S)):
            lines = [l.strip() for l in block.strip("\n").split("\n")]
            while lines and not lines[0]:
                lines.pop(0)
            msg = "\n".join(lines).strip("\n") + "\n"
            if "\n\n" not in msg:
                msg += "\n"
            msg = re.sub(r"\[last_([A-Za-z-]+):?\]", lambda m: LAST.get(m.group(1), ""), msg)
            msg = msg.replace("@CALLER@", "0212345678").replace("@AGENT@", "1001")
            msg = re.sub(r"@[A-Z_]+@", "sip:1002@192.0.2.10", msg)
            msg = re.sub(r"\[\$[a-z_]+\]", "<sip:803164@192.0.2.1>", msg)
            msg = re.sub(r"\[([a-z_0-9-]+)\]", lambda m: SIPP_VALUES.get(m.group(1), m.group(0)), msg)
            msg = re.sub(r"\n+(?=\n\n)", "", msg)
            head, _, body = msg.partition("\n\n")
            body = crlf(body)
            head = head.replace("[len]", str(len(body.encode())))
            head = "\n".join(l for l in head.split("\n") if l)
            out.append((f"sipp-{os.path.basename(path)[:-4]}-{i}", crlf(head) + "\r\n\r\n" + body))
    return out


def sip_seeds():
    msgs = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/rfc4475/*.dat"))):
        name = "rfc4475-" + os.path.basename(path)[:-4]
        data = open(path, "rb").read()
        write("sip_message", name, data)
        msgs.append((name, data))
    for name, msg in sipp_messages():
        write("sip_message", name, msg)
        msgs.append((name, msg.encode()))
    # TCP: keep-alive, two messages back to back, the second cut short.
    invite = dict(msgs)["sipp-uac_caller-0"]
    bye = [m for n, m in msgs if n.startswith("sipp-") and m.startswith(b"BYE")][0]
    write("sip_message", "tcp-stream", b"\r\n\r\n" + invite + bye + invite[:80])
    return dict(msgs)


def sip_endpoint_seeds(msgs):
    invite = msgs["sipp-uac_caller-0"]
    ack = msgs["sipp-uac_caller-1"]
    bye = [m for n, m in msgs.items() if n.startswith("sipp-") and m.startswith(b"BYE")][0]
    cancel = crlf(
        "CANCEL sip:803164@192.0.2.1:5060 SIP/2.0\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-sipp-1\n"
        "From: \"0212345678\" <sip:0212345678@192.0.2.10:5060>;tag=4242SIPpTag001\n"
        "To: <sip:803164@192.0.2.1:5060>\nCall-ID: 1-4242@192.0.2.10\nCSeq: 1 CANCEL\n"
        "Max-Forwards: 70\nContent-Length: 0\n\n")
    # Responses to the target's own client transactions (branches in sip_endpoint.rs).
    def response(status, reason, branch, method, to_tag=";tag=far-1", extra=""):
        return crlf(
            f"SIP/2.0 {status} {reason}\n"
            f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch};rport=5060\n"
            "From: <sip:verde@192.0.2.1>;tag=fuzz-local\n"
            f"To: <sip:803164@192.0.2.10>{to_tag}\n"
            "Call-ID: fuzz-call@192.0.2.1\n"
            f"CSeq: 1 {method}\n{extra}Content-Length: 0\n\n")
    inv = "z9hG4bK-fuzz-invite"
    opt = "z9hG4bK-fuzz-options"
    # flags: bit0 TCP, bit1 other peer, bits2-4 TU status index (100,180,183,200,202,486,487,603),
    # 0x40 answer pending with 200, 0x80 cancel our INVITE.
    write("sip_endpoint", "uas-invite-ring-answer-ack-bye",
          record(1 << 2, 0, invite) + record(0x40, 50, b"") + record(0, 20, ack)
          + record(3 << 2, 250, bye))
    write("sip_endpoint", "uas-invite-cancel",
          record(1 << 2, 0, invite) + record(0, 100, invite) + record(0, 100, cancel)
          + record(0, 60, ack))
    write("sip_endpoint", "uas-invite-busy-retransmit-tcp",
          record(5 << 2 | 1, 0, invite) + record(5 << 2, 125, invite) + record(0, 255, b""))
    write("sip_endpoint", "uac-ring-ok",
          record(0, 10, response(180, "Ringing", inv, "INVITE"))
          + record(0, 100, response(200, "OK", inv, "INVITE", extra="Contact: <sip:803164@192.0.2.10>\n"))
          + record(0, 10, response(200, "OK", opt, "OPTIONS")))
    write("sip_endpoint", "uac-cancel-487",
          record(0x80, 10, response(183, "Session Progress", inv, "INVITE"))
          + record(0, 10, response(200, "OK", inv, "CANCEL"))
          + record(0, 10, response(487, "Request Terminated", inv, "INVITE")))
    write("sip_endpoint", "uac-timeouts", record(0, 255, b"\r\n\r\n") + record(0, 255, b""))
    write("sip_endpoint", "stray-and-garbage",
          record(2, 0, response(200, "OK", "z9hG4bK-unknown", "INVITE"))
          + record(0, 0, msgs["rfc4475-badvers"]) + record(0, 0, msgs["rfc4475-insuf"])
          + record(0, 0, msgs["rfc4475-scalarlg"]))


# ---------------------------------------------------------------------------------- SDP
def chrome_offer():
    src = open(os.path.join(ROOT, "crates/verde-webrtc/src/tests.rs")).read()
    block = re.search(r'const CHROME_OFFER: &str = "(.*?)";', src, re.S).group(1)
    return block.replace("\\r\\n\\\n", "\r\n").replace("\\r\\n", "\r\n")


SIPP_SDP = crlf("v=0\no=sipp 53655765 2353687637 IN IP4 192.0.2.10\ns=-\nc=IN IP4 192.0.2.10\n"
                "t=0 0\nm=audio 6000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\n"
                "a=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15\na=ptime:20\na=sendrecv\n")
OFFERS = {
    "sipp-pcmu-dtmf": SIPP_SDP,
    "chrome": None,
    "trunk-pcma-first": crlf(
        "v=0\no=- 1 1 IN IP4 203.0.113.20\ns=-\nc=IN IP4 203.0.113.20\nt=0 0\n"
        "m=audio 16384 RTP/AVP 8 0 18 96\na=rtpmap:8 PCMA/8000\na=rtpmap:0 PCMU/8000\n"
        "a=rtpmap:18 G729/8000\na=fmtp:18 annexb=no\na=rtpmap:96 telephone-event/8000\n"
        "a=fmtp:96 0-16\na=ptime:20\na=maxptime:40\na=rtcp:16385\n"),
    "hold-sendonly": SIPP_SDP.replace("a=sendrecv", "a=sendonly"),
    "hold-old-style": SIPP_SDP.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0"),
    "inactive-session-level": SIPP_SDP.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n").replace("a=sendrecv\r\n", ""),
    "video-then-audio-ipv6": crlf(
        "v=0\no=alice 2890844526 2890844526 IN IP6 2001:db8::5\ns=-\nc=IN IP6 2001:db8::5\n"
        "t=0 0\nm=video 51372 RTP/AVP 31\na=rtpmap:31 H261/90000\n"
        "m=audio 49170 RTP/AVP 97 8\na=rtpmap:97 pcmu/8000\nc=IN IP6 2001:db8::9\n"
        "m=audio 0 RTP/AVP 0\n"),
    "no-common-codec": SIPP_SDP.replace("RTP/AVP 0 101", "RTP/AVP 18 101").replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000"),
    "srtp-savp": SIPP_SDP.replace("RTP/AVP", "RTP/SAVP") + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VxKSB7Cg==\r\n",
    "rfc4475-sdp01-body": crlf("v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.5\ns=-\nc=IN IP4 192.0.2.5\n"
                               "t=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n"),
    "lf-only-linphone-like": ("v=0\no=0212345678 3500 1200 IN IP4 10.1.2.3\ns=Talk\nc=IN IP4 10.1.2.3\n"
                              "t=0 0\na=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics\n"
                              "m=audio 7078 RTP/AVP 96 0 8 101\na=rtpmap:96 opus/48000/2\n"
                              "a=fmtp:96 useinbandfec=1\na=rtpmap:101 telephone-event/8000\na=rtcp-fb:* trr-int 1000\n"),
}


def sdp_seeds():
    OFFERS["chrome"] = chrome_offer()
    for name, sdp in OFFERS.items():
        for choice in (0, 3):
            write("sdp_answer", f"{name}-{choice}", bytes([choice]) + sdp.encode())
    firefox = chrome_offer().replace("m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
                                     "m=audio 9 UDP/TLS/RTP/SAVPF 109 9 0 8 101").replace(
        "a=rtpmap:111 opus/48000/2", "a=rtpmap:109 opus/48000/2").replace(
        "a=rtpmap:126 telephone-event/8000", "a=rtpmap:101 telephone-event/8000")
    for choice in range(3):
        write("webrtc_offer", f"chrome-{choice}", bytes([choice]) + OFFERS["chrome"].encode())
    write("webrtc_offer", "firefox-like-0", b"\x00" + firefox.encode())
    write("webrtc_offer", "lf-only-1", b"\x01" + OFFERS["lf-only-linphone-like"].encode())
    write("webrtc_offer", "sipp-2", b"\x02" + SIPP_SDP.encode())


# ------------------------------------------------------------------------- RTP / RTCP / 4733
REMOTE_SSRC = 0x1234ABCD
OUR_SSRC = 0x56455244  # media_packets.rs


def rtp(pt, seq, ts, payload, marker=False, ssrc=REMOTE_SSRC):
    return struct.pack(">BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def tone_alaw(n=160):
    # Not a real tone: a repeating A-law pattern is enough to reach the decoders.
    return bytes((0xD5 + (i * 37) % 40) & 0xFF for i in range(n))


def event(digit, end, volume, duration):
    return struct.pack(">BBH", digit, (0x80 if end else 0) | volume, duration)


def rtcp_sr(ssrc, reports=()):
    body = struct.pack(">IIIIII", ssrc, 0xE9A0B7C0, 0x80000000, 160 * 50, 50, 8000)
    for r in reports:
        body += r
    return struct.pack(">BBH", 0x80 | len(reports), 200, (len(body) + 4) // 4 - 1) + body


def rtcp_rr(ssrc, reports):
    body = struct.pack(">I", ssrc) + b"".join(reports)
    return struct.pack(">BBH", 0x80 | len(reports), 201, (len(body) + 4) // 4 - 1) + body


def report_block(ssrc, lost_frac=5, cum=3, ext_seq=1050, jitter=40, lsr=0xA0B7C080, dlsr=6554):
    return struct.pack(">IB", ssrc, lost_frac) + cum.to_bytes(3, "big") + struct.pack(">IIII", ext_seq, jitter, lsr, dlsr)


def rtcp_sdes(ssrc, cname=b"remote@192.0.2.10"):
    chunk = struct.pack(">I", ssrc) + bytes([1, len(cname)]) + cname + b"\x00"
    chunk += b"\x00" * ((4 - len(chunk) % 4) % 4)
    return struct.pack(">BBH", 0x81, 202, (len(chunk) + 4) // 4 - 1) + chunk


def rtcp_bye(ssrc):
    return struct.pack(">BBHI", 0x81, 203, 1, ssrc)


def media_seeds():
    # shape byte: bit0 PCMU (else PCMA), bit1 no telephone-event, bits2-3 inband mode,
    # 0x10 audio tap, 0x20 bridged. Record flags: bit0 RTCP socket, bit1 from a stranger,
    # bit2 to leg b, 0x08 send a digit, 0x10 set direction (bits 5-6), 0x80 restart relay.
    frames = [record(0, 5, rtp(8, 1000 + i, 160 * i, tone_alaw(), marker=(i == 0)))
              for i in range(6)]
    audio = b"".join(frames)
    write("media_packets", "pcma-stream", b"\x00" + audio)
    write("media_packets", "pcma-stream-bridged-tap", b"\x30" + audio)
    reordered = b"".join(record(0, 5, rtp(8, 2000 + i, 160 * i, tone_alaw()))
                         for i in (0, 2, 1, 4, 3, 3, 7))
    write("media_packets", "pcma-reordered-dup-loss-bridged", b"\x20" + reordered)
    # RFC 4733 digit 5: start, two updates, three end packets (same timestamp), PT 101.
    ev = b"".join(record(0, 12, rtp(101, 1002 + i, 8000, event(5, i >= 3, 10, 160 * (i + 1)),
                                    marker=(i == 0)))
                  for i in range(6))
    write("media_packets", "rfc4733-digit-5", b"\x00" + b"".join(frames[:2]) + ev)
    write("media_packets", "rfc4733-digit-5-bridged", b"\x20" + ev + record(0, 250, b""))
    rtcp = (record(1, 50, rtcp_sr(REMOTE_SSRC, [report_block(OUR_SSRC)]) + rtcp_sdes(REMOTE_SSRC))
            + record(1, 250, rtcp_rr(REMOTE_SSRC, [report_block(OUR_SSRC, lsr=0)]))
            + record(1, 10, rtcp_rr(REMOTE_SSRC, [report_block(0x11111111)]) + rtcp_bye(REMOTE_SSRC)))
    write("media_packets", "rtcp-sr-rr-sdes-bye", b"\x00" + b"".join(frames[:3]) + rtcp)
    stranger = record(2, 5, rtp(0, 10, 0, b"\xff" * 160, ssrc=0xBADBAD)) + record(2, 255, rtp(0, 11, 160, b"\xff" * 160, ssrc=0xBADBAD))
    write("media_packets", "pcmu-inband-always-stranger", b"\x05" + stranger)
    misc = (record(0, 0, rtp(13, 5, 0, b"\x40"))                                     # comfort noise
            + record(0, 0, b"\x90" + rtp(8, 6, 160, b"")[1:] + b"\x00\x01\x00\x01" + b"\0" * 4)  # extension bit, short ext
            + record(0, 0, b"\xa0" + rtp(8, 7, 320, tone_alaw(20) + b"\x00\x00\x03")[1:])       # padding
            + record(0x18, 25, rtp(8, 8, 480, tone_alaw()))
            + record(0xb0, 25, rtp(8, 9, 640, tone_alaw())))
    write("media_packets", "cn-ext-padding-hold-dtmf", b"\x20" + misc)


# ---------------------------------------------------------------------------------- IVR
def ivr_seeds():
    paths = sorted(glob.glob(os.path.join(ROOT, "ivr-flows/*.yaml"))
                   + glob.glob(os.path.join(ROOT, "tests/fixtures/flows-*/*.yaml")))
    for path in paths:
        text = open(path, encoding="utf-8").read()
        name = os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path)[:-5]
        write("ivr_flow", name, text)
        write("ivr_flow", name + "-keys", "#fuzz-keys: 1 2 9 * #\n" + text)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    msgs = sip_seeds()
    sip_endpoint_seeds(msgs)
    sdp_seeds()
    media_seeds()
    ivr_seeds()
    for target in sorted(os.listdir(OUT)):
        files = os.listdir(os.path.join(OUT, target))
        size = sum(os.path.getsize(os.path.join(OUT, target, f)) for f in files)
        print(f"{target}: {len(files)} files, {size} bytes")


if __name__ == "__main__":
    main()
