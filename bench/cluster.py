"""Scale-out on a real cluster, measured (issue 12): a split gateway on a three-node NATS
JetStream cluster (Debian's nats-server, `mqtt { stream_replicas: 3 }`), its `coap` part
publishing through one node's MQTT listener and 1, 2 or 3 `uplinks` workers sharing one
JetStream consumer (`[split.jetstream]`), delivering to a Mosquitto "cloud". A fresh cluster
per run (the consumer and its stream outlive the workers). Gateway processes on core 0, the
cluster, Mosquitto and the load generator on core 1, as in deploy.py. Writes
docs/bench-raw/cluster.jsonl and docs/bench-raw/cluster.md, which bench.py's report includes.

Run through bench/cluster.sh (it builds the release binaries first)."""
import json
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RUNS = int(os.environ.get("CLUSTER_RUNS", "2"))
# A fixed number of readings per run (closed loop, 256 in flight): through NATS's MQTT listener
# the bus takes far fewer readings a second than the `coap` part acknowledges, so a timed send
# phase would mostly measure how long the backlog takes.
COUNT = os.environ.get("CLUSTER_COUNT", "6000")
os.environ["DEPLOY_DURATION"] = "60"  # deploy.Run.load's send phase: ends at COUNT first
sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy import LOAD_CORE, SUT_CORE, Run, free_port, med, ready, worker_table  # noqa: E402

NATS = "/usr/sbin/nats-server"


def start_cluster(r, tag):
    """Three nodes on loopback; returns (MQTT ports, client ports) once a meta leader exists."""
    ports = [[free_port() for _ in range(4)] for _ in range(3)]
    for i, (client, route, mqtt, monitor) in enumerate(ports):
        routes = ", ".join(f"nats-route://127.0.0.1:{p[1]}" for j, p in enumerate(ports) if j != i)
        conf = r.work / f"nats-{tag}-{i}.conf"
        conf.write_text(f"server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n"
                        f'jetstream {{ store_dir: "{r.work}/js-{tag}-{i}" }}\n'
                        f"cluster {{ name: bench, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n"
                        f"mqtt {{ listen: 127.0.0.1:{mqtt}, stream_replicas: 3 }}\n")
        r.spawn([NATS, "-c", str(conf)], core=LOAD_CORE, log=f"nats-{tag}-{i}")
    deadline = time.monotonic() + 60
    for p in ports:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{p[3]}/jsz", timeout=0.5) as resp:
                    body = resp.read().decode()
                if '"meta_cluster"' in body and '"leader"' in body:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster elected no meta leader in 60 s")
            time.sleep(0.05)
    return [p[2] for p in ports], [p[0] for p in ports]


def jetstream_config(r, name, coap, cloud, bus_mqtt, clients, gid):
    cfg = r.config(name, coap, cloud, bus=bus_mqtt, gid=gid)
    servers = ", ".join(f'"nats://127.0.0.1:{c}"' for c in clients)
    text = cfg.read_text().replace(
        "[[uplinks]]", f"[split.jetstream]\nservers = [{servers}]\nstream_replicas = 3\n[[uplinks]]", 1)
    cfg.write_text(text)
    return cfg


def workers(r, cloud, n, run):
    """The cluster, n workers (first: the consumer must exist before the ward publishes), the ward."""
    mqtt, clients = start_cluster(r, f"{run}-{n}")
    pids = []
    for i in range(n):
        http = free_port()
        cfg = jetstream_config(r, f"js-worker-{run}-{n}-{i}", free_port(socket.SOCK_DGRAM), cloud,
                               mqtt[0], clients, f"bench-js{run}-{n}-{i}")
        w = r.spawn([r.wardgate, "run", "--only", "uplinks", "--config", str(cfg)],
                    {"WG_HTTP": str(http)}, SUT_CORE, f"js-worker-{i}")
        ready(http)
        pids.append(w.pid)
    coap, http_c = free_port(socket.SOCK_DGRAM), free_port()
    cfg = jetstream_config(r, f"js-ward-{run}-{n}", coap, cloud, mqtt[1], clients, f"bench-jsward{run}-{n}")
    c = r.spawn([r.wardgate, "run", "--only", "coap", "--config", str(cfg)],
                {"WG_HTTP": str(http_c)}, SUT_CORE, "js-ward")
    ready(http_c)
    return {"coap": coap, "pids": [c.pid] + pids}


def main():
    bench_bin, wardgate_bin, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if not os.path.exists(NATS):
        sys.exit(f"{NATS} missing (apt-get install nats-server)")
    recs, by_n = [], {1: [], 2: [], 3: []}
    with tempfile.TemporaryDirectory() as work:
        r = Run(work, bench_bin, wardgate_bin)
        try:
            _, cloud = r.mosquitto()
            for run in range(RUNS):
                for n in (1, 2, 3):
                    sut = workers(r, cloud, n, run)
                    # Everything but the cloud broker goes after it: the next run has a fresh cluster.
                    rep = r.measure(f"cluster-workers-{n}", sut, cloud, keep=1, drain="120",
                                    extra=("--count", COUNT))
                    by_n[n].append(rep)
                    recs.append({"kind": "cluster_workers", "workers": n, "run": run, "report": rep})
                    print(f"{n} JetStream workers run {run}: acked {rep['ok_rps']:.0f}/s delivered "
                          f"{rep['e2e']['delivered_per_s']:.0f}/s lost {rep['e2e']['lost_acked']} "
                          f"duplicates {rep['e2e'].get('duplicates', 0)}", file=sys.stderr)
        finally:
            r.stop_all()
    with open(out_dir / "cluster.jsonl", "w") as f:
        for rec in recs:
            f.write(json.dumps(rec) + "\n")
    delivered = lambda x: x["e2e"]["delivered_per_s"]
    lines = ["", "Uplink workers sharing a NATS JetStream cluster (`bench/cluster.sh`, "
             f"{RUNS} runs each, {COUNT} readings closed loop, 256 in flight; a fresh three-node cluster per run, "
             "`stream_replicas: 3`; the ward's `coap` part publishes through one node's MQTT listener, the workers "
             "pull from one shared consumer; gateway parts on core 0, the three nodes, the cloud Mosquitto and the "
             "load on core 1). Delivered /s counts until the last reading arrived.", ""]
    lines += worker_table("JetStream workers", by_n)
    if by_n[1] and by_n[3]:
        lines += ["", f"3 workers / 1 worker, delivered: {med([delivered(x) for x in by_n[3]]) / med([delivered(x) for x in by_n[1]]):.2f}."]
    (out_dir / "cluster.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
