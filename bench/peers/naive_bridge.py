#!/usr/bin/env python3
"""naive-bridge: the "few lines of Python" baseline wardgate is compared against.

An aiocoap server that republishes the payload of every POST/PUT to Mosquitto with paho-mqtt at
QoS 1 and answers 2.01 Created once the broker's PUBACK arrived (so, like wardgate, an
acknowledgement means the reading left the device's hands safely; unlike wardgate, nothing is
stored locally, decoded or normalized). Topic: <prefix>/<last URI path segment>/vital.

It is deliberately simple but not handicapped: paho's in-flight window is raised from its
default of 20 to 1000 so the bridge is not limited by broker round trips.

Loopback only: it refuses to bind or connect anywhere else. Stops after --max-seconds.
"""

import argparse
import asyncio
import ipaddress
import socket
import sys
import threading

import aiocoap
import aiocoap.resource as resource
import paho.mqtt.client as mqtt


def loopback(host: str) -> str:
    addr = socket.gethostbyname(host)
    if not ipaddress.ip_address(addr).is_loopback:
        sys.exit(f"naive_bridge: refusing non-loopback address {host}")
    return addr


class Publisher:
    """paho client on its own network thread; publish() returns a future resolved on PUBACK."""

    def __init__(self, host: str, port: int, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        # Guards only our two dicts; never held while calling into paho, whose network thread
        # holds paho's own locks when it calls _on_publish (holding ours across publish() would
        # invert the lock order and deadlock).
        self.lock = threading.Lock()
        self.waiting = {}
        self.early = set()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="naive-bridge")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.on_publish = self._on_publish
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_publish(self, client, userdata, mid, reason_code=None, properties=None):
        with self.lock:
            fut = self.waiting.pop(mid, None)
            if fut is None:
                # PUBACK before publish() registered the future.
                self.early.add(mid)
        if fut is not None:
            self.loop.call_soon_threadsafe(_resolve, fut)

    def publish(self, topic: str, payload: bytes) -> asyncio.Future:
        fut = self.loop.create_future()
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            fut.set_exception(RuntimeError(f"publish failed: rc={info.rc}"))
            return fut
        with self.lock:
            if info.mid in self.early:
                self.early.discard(info.mid)
                fut.set_result(None)
            else:
                self.waiting[info.mid] = fut
        return fut


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Bridge(resource.Resource):
    def __init__(self, publisher: Publisher, prefix: str):
        super().__init__()
        self.publisher = publisher
        self.prefix = prefix

    async def render(self, request):
        if request.code not in (aiocoap.POST, aiocoap.PUT):
            return aiocoap.Message(code=aiocoap.METHOD_NOT_ALLOWED)
        path = request.opt.uri_path
        device = path[-1] if path else "unknown"
        try:
            await asyncio.wait_for(self.publisher.publish(f"{self.prefix}/{device}/vital", request.payload), 10)
        except Exception:
            return aiocoap.Message(code=aiocoap.SERVICE_UNAVAILABLE)
        return aiocoap.Message(code=aiocoap.CREATED)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5683)
    ap.add_argument("--mqtt-host", default="127.0.0.1")
    ap.add_argument("--mqtt-port", type=int, default=1883)
    ap.add_argument("--topic-prefix", default="naive/bench")
    ap.add_argument("--max-seconds", type=float, default=3600)
    args = ap.parse_args()
    listen = loopback(args.listen)
    mqtt_host = loopback(args.mqtt_host)
    publisher = Publisher(mqtt_host, args.mqtt_port, asyncio.get_running_loop())
    await aiocoap.Context.create_server_context(Bridge(publisher, args.topic_prefix), bind=(listen, args.port))
    print(f"naive_bridge listening on {listen}:{args.port}", file=sys.stderr, flush=True)
    await asyncio.sleep(args.max_seconds)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
