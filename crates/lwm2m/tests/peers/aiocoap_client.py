#!/usr/bin/env python3
"""An LwM2M client made of aiocoap, as an independent wire-level test peer for wardgate's server.

It speaks only what the test tells it, with bytes the test chooses, so the server is checked
against a CoAP stack that is not ours. Driven over stdin/stdout with one JSON object per line:

  stdin commands:
    {"op": "request", "method": "POST", "path": "rd", "query": ["ep=x"], "cf": 40,
     "payload_hex": "...", "id": 1}        -> {"event": "response", "id": 1, "code": "2.01",
                                               "location": ["rd", "abc"], "payload_hex": "..."}
    {"op": "serve", "path": "3/0", "cf": 11542, "payload_hex": "...", "code": "2.05",
     "method": "GET", "accepts": [11542]}
        (answer that method, or "*" any, on that path; an Accept not in `accepts` gets 4.06;
        every path is observable)
    {"op": "notify", "path": "3303/0/5700", "cf": 110, "payload_hex": "..."}
        (send a notification to every observer of the path)
    {"op": "quit"}
  stdout events: {"event": "ready"}, responses, and for every request the server
  sends: {"event": "request", "method": "GET", "path": "3/0", "query": [...], "accept": 11542,
  "observe": 0, "cf": null, "payload_hex": "..."}
"""
import asyncio
import json
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap.numbers.codes import Code


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Canned(resource.ObservableResource):
    """Answers every method with the canned answer the test set, and records the request."""

    async def needs_blockwise_assembly(self, request):
        # This peer slices its answers itself (see `block`), so aiocoap must not.
        return False

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.answers = {}  # method -> (code, cf, payload)
        self.accepts = None  # Accept values answered; others get 4.06
        # Answer block-wise in 1024-byte blocks (RFC 7959), as a device with a small MTU does.
        self.block = False
        # Seconds to think before answering: past aiocoap's empty-ACK delay the answer is a
        # separate response (an empty ACK first, then a CON with the content).
        self.delay = 0
        self.latest = None  # (cf, payload) of the last notification

    def answer(self, method, code, cf, payload):
        self.answers[method] = (code, cf, payload)

    async def render(self, request):
        opts = request.opt
        emit({
            "event": "request",
            "method": request.code.name,
            "path": self.path,
            "query": list(opts.uri_query),
            "accept": int(opts.accept) if opts.accept is not None else None,
            "observe": opts.observe,
            "cf": int(opts.content_format) if opts.content_format is not None else None,
            "payload_hex": request.payload.hex(),
        })
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.accepts is not None and opts.accept is not None and int(opts.accept) not in self.accepts:
            return aiocoap.Message(code=Code.NOT_ACCEPTABLE)
        if request.code == Code.GET and self.latest is not None and opts.observe is not None:
            cf, payload = self.latest
            return self.sliced(request, aiocoap.Message(code=Code.CONTENT, payload=payload, content_format=cf))
        code, cf, payload = self.answers.get(request.code.name, self.answers.get("*", ("4.05", None, b"")))
        msg = aiocoap.Message(code=Code[code_name(code)], payload=payload)
        if cf is not None:
            msg.opt.content_format = cf
        return self.sliced(request, msg)

    def sliced(self, request, msg):
        if not self.block or len(msg.payload) <= 1024:
            return msg
        b = request.opt.block2
        number, szx = (b.block_number, b.size_exponent) if b is not None else (0, 6)
        return msg._extract_block(number, szx, 1024)

    async def render_get(self, request):
        return await self.render(request)

    async def render_put(self, request):
        return await self.render(request)

    async def render_post(self, request):
        return await self.render(request)

    async def render_delete(self, request):
        return await self.render(request)

    async def render_fetch(self, request):
        return await self.render(request)

    def notify(self, cf, payload):
        self.latest = (cf, payload)
        self.updated_state()


CODES = {
    "2.01": "CREATED", "2.02": "DELETED", "2.04": "CHANGED", "2.05": "CONTENT",
    "4.00": "BAD_REQUEST", "4.04": "NOT_FOUND", "4.05": "METHOD_NOT_ALLOWED",
    "4.06": "NOT_ACCEPTABLE", "4.15": "UNSUPPORTED_CONTENT_FORMAT",
}


def code_name(code):
    return CODES[code]


async def main():
    server_host = sys.argv[1]
    site = resource.Site()
    canned = {}
    ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", 0))
    emit({"event": "ready"})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op == "serve":
            path = cmd["path"]
            if path not in canned:
                canned[path] = Canned(path)
                site.add_resource(path.split("/"), canned[path])
            canned[path].answer(cmd.get("method", "*"), cmd.get("code", "2.05"), cmd.get("cf"),
                                bytes.fromhex(cmd.get("payload_hex", "")))
            if "accepts" in cmd:
                canned[path].accepts = cmd["accepts"]
            if "block" in cmd:
                canned[path].block = cmd["block"]
            if "delay" in cmd:
                canned[path].delay = cmd["delay"]
            emit({"event": "served", "path": path})
        elif op == "notify":
            canned[cmd["path"]].notify(cmd.get("cf"), bytes.fromhex(cmd["payload_hex"]))
        elif op == "request":
            asyncio.ensure_future(request(ctx, server_host, cmd))
    await ctx.shutdown()


async def request(ctx, server_host, cmd):
    msg = aiocoap.Message(code=Code[cmd["method"]], payload=bytes.fromhex(cmd.get("payload_hex", "")))
    msg.opt.uri_host = None
    msg.remote = aiocoap.message.UndecidedRemote("coap", server_host)
    msg.opt.uri_path = [p for p in cmd["path"].split("/") if p]
    msg.opt.uri_query = cmd.get("query", [])
    if cmd.get("cf") is not None:
        msg.opt.content_format = cmd["cf"]
    try:
        resp = await ctx.request(msg).response
        emit({"event": "response", "id": cmd.get("id"), "code": resp.code.dotted,
              "location": list(resp.opt.location_path), "payload_hex": resp.payload.hex(),
              "max_age": resp.opt.max_age})
    except Exception as e:  # the test sees the failure as an event, not a hang
        emit({"event": "response", "id": cmd.get("id"), "error": repr(e)})


if __name__ == "__main__":
    asyncio.run(main())
