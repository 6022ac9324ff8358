"""Containers and split mode, measured (issue 12): image sizes, start-up time to ready (process,
split parts, container), and the split gateway's end-to-end throughput and latency against the
single binary in the same run, with the same core split as bench.py (gateway processes on core 0;
load generator and Mosquitto on core 1). Writes docs/bench-raw/deploy.jsonl and
docs/bench-raw/deploy.md, which bench.py's report includes.

Run through bench/deploy.sh (it builds the release binaries and the images first)."""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUT_CORE, LOAD_CORE = "0", "1"
RUNS = int(os.environ.get("DEPLOY_RUNS", "3"))
DURATION = os.environ.get("DEPLOY_DURATION", "5")


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ready(port, timeout=60.0):
    """Seconds until GET /readyz answers 200 (polled every 10 ms)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=0.5) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except Exception:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"/readyz on {port} not 200 after {timeout} s")


class Run:
    def __init__(self, work, bench_bin, wardgate_bin):
        self.work = Path(work)
        self.bench = bench_bin
        self.wardgate = wardgate_bin
        self.procs = []

    def spawn(self, cmd, env=None, core=None, log="proc"):
        if core is not None:
            cmd = ["taskset", "-c", core] + cmd
        f = open(self.work / f"{log}.log", "ab")
        p = subprocess.Popen(cmd, stdout=f, stderr=f, env={**os.environ, **(env or {})}, cwd=self.work)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs = []

    def mosquitto(self, persistent=False):
        port = free_port()
        conf = self.work / f"mosq-{port}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 2000000\nmax_queued_bytes 0\nmax_inflight_messages 256\n"
                        "set_tcp_nodelay true\n")
        p = self.spawn(["/usr/sbin/mosquitto", "-c", str(conf)], core=LOAD_CORE, log=f"mosq-{port}")
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return p, port
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def config(self, name, coap, cloud, bus=None, uplink="mqtt", gid="bench", shared=None):
        data = self.work / f"data-{name}-{time.time_ns()}"
        data.mkdir()
        if uplink == "file":
            up = '[[uplinks]]\ntype = "file"\nname = "sink"\npath = "/dev/null"\n'
        else:
            up = (f'[[uplinks]]\ntype = "mqtt"\nname = "cloud"\nurl = "mqtt://127.0.0.1:{cloud}"\n'
                  'topic = "wardgate/bench/{device}/{class}"\n')
        split = f'[split]\nbroker = "mqtt://127.0.0.1:{bus}"\n' if bus else ""
        if shared:
            split += f'shared_group = "{shared}"\n'
        cfg = self.work / f"{name}.toml"
        cfg.write_text(f'[gateway]\nid = "{gid}"\n[log]\nlevel = "warn"\n'
                       f'[coap]\nlisten = ["127.0.0.1:{coap}"]\n[http]\nlisten = "127.0.0.1:${{WG_HTTP}}"\n'
                       f'[store]\npath = "{data}/outbox.db"\n' + split + up)
        return cfg

    def single(self, cloud, uplink="mqtt"):
        coap, http = free_port(socket.SOCK_DGRAM), free_port()
        cfg = self.config("single", coap, cloud, uplink=uplink)
        t0 = time.monotonic()
        p = self.spawn([self.wardgate, "run", "--config", str(cfg)], {"WG_HTTP": str(http)}, SUT_CORE, "single")
        return {"coap": coap, "pids": [p.pid], "ready_s": ready(http)}

    def split(self, cloud, bus):
        coap, http_u, http_c = free_port(socket.SOCK_DGRAM), free_port(), free_port()
        cfg = self.config("split", coap, cloud, bus=bus)
        t0 = time.monotonic()
        u = self.spawn([self.wardgate, "run", "--only", "uplinks", "--config", str(cfg)],
                       {"WG_HTTP": str(http_u)}, SUT_CORE, "split-uplinks")
        ready(http_u)
        c = self.spawn([self.wardgate, "run", "--only", "coap", "--config", str(cfg)],
                       {"WG_HTTP": str(http_c)}, SUT_CORE, "split-coap")
        ready(http_c)
        return {"coap": coap, "pids": [c.pid, u.pid], "ready_s": time.monotonic() - t0}

    def workers(self, cloud, bus, n, run):
        """A split gateway whose `uplinks` part is `n` workers sharing the bus subscription."""
        coap = free_port(socket.SOCK_DGRAM)
        pids = []
        for i in range(n):
            http = free_port()
            cfg = self.config(f"worker-{run}-{i}", free_port(socket.SOCK_DGRAM), cloud, bus=bus,
                              gid=f"bench-w{run}-{n}-{i}", shared="bench")
            w = self.spawn([self.wardgate, "run", "--only", "uplinks", "--config", str(cfg)],
                           {"WG_HTTP": str(http)}, SUT_CORE, f"worker-{i}")
            ready(http)
            pids.append(w.pid)
        http_c = free_port()
        cfg = self.config(f"ward-{run}-{n}", coap, cloud, bus=bus)
        c = self.spawn([self.wardgate, "run", "--only", "coap", "--config", str(cfg)],
                       {"WG_HTTP": str(http_c)}, SUT_CORE, "ward")
        ready(http_c)
        return {"coap": coap, "pids": [c.pid] + pids}

    def measure(self, label, sut, cloud, keep=2, **load_options):
        """One closed-loop run against `sut` (its CPU summed over every part), then every process
        started after the first `keep` (the cloud broker and the bus) is stopped."""
        before = sum(cpu_ms(p) for p in sut["pids"])
        rep = self.load(label, sut["coap"], sut["pids"], cloud, [self.procs[0].pid], **load_options)
        rep["sut_cpu_ms_all_parts"] = sum(cpu_ms(p) for p in sut["pids"]) - before
        for p in self.procs[keep:]:
            p.terminate()
        for p in self.procs[keep:]:
            p.wait(timeout=30)
        self.procs = self.procs[:keep]
        return rep

    def load(self, label, target, pids, cloud, peer_pids, drain="30", extra=()):
        cmd = ["taskset", "-c", LOAD_CORE, self.bench, "coap-load", "--target", f"127.0.0.1:{target}",
               "--pid", str(pids[0]), "--peer-pid", str(peer_pids[0]), "--timeout", "2", "--label", label,
               "--in-flight", "256", "--duration", DURATION, "--format", "senml-json", "--type", "con",
               "--mqtt", f"mqtt://127.0.0.1:{cloud}", "--topic", "wardgate/bench/+/vital", "--drain-timeout", drain, *extra]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=int(DURATION) + int(drain) + 90)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-500:])
        return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_ms(pid):
    """utime+stime of a process in ms (clock ticks are 100 Hz here)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def container_startup(image, runs):
    """Seconds from `docker run -d` to /readyz 200 through the published port."""
    out = []
    with tempfile.TemporaryDirectory() as d:
        cfg = Path(d) / "gateway.toml"
        cfg.write_text('[gateway]\nid = "bench"\n[coap]\nlisten = ["0.0.0.0:5683"]\n[http]\nlisten = "0.0.0.0:8080"\n'
                       '[store]\npath = "/var/lib/wardgate/outbox.db"\n'
                       '[[uplinks]]\ntype = "file"\nname = "sink"\npath = "/dev/null"\n')
        os.chmod(d, 0o755)
        os.chmod(cfg, 0o644)
        for _ in range(runs):
            port = free_port()
            t0 = time.monotonic()
            cid = subprocess.run(["docker", "run", "-d", "--rm", "--read-only", "-p", f"127.0.0.1:{port}:8080",
                                  "-v", f"{cfg}:/etc/wardgate/gateway.toml:ro", image, "run"],
                                 capture_output=True, text=True, check=True).stdout.strip()
            try:
                ready(port)
                out.append(time.monotonic() - t0)
            finally:
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    return out


def worker_table(first, by_n):
    """Markdown rows of the runs with 1, 2, 3 workers (`by_n`: n -> coap-load reports with the
    parts' CPU added), `first` heading the first column."""
    lines = [f"| {first} | acked /s | delivered /s | e2e p99 ms | lost acked | duplicates | CPU ms/1k (all parts) |",
             "|---|---|---|---|---|---|---|"]
    for n, reps in by_n.items():
        if reps:
            w = lambda f: [f(x) for x in reps]
            lines.append(f"| {n} | {spread(w(lambda x: x['ok_rps']), '{:.0f}')} | "
                         f"{spread(w(lambda x: x['e2e']['delivered_per_s']), '{:.0f}')} | "
                         f"{spread(w(lambda x: x['e2e']['latency']['p99_ms']), '{:.1f}')} | "
                         f"{sum(w(lambda x: x['e2e']['lost_acked']))} | {sum(w(lambda x: x['e2e'].get('duplicates', 0)))} | "
                         f"{spread(w(lambda x: x['sut_cpu_ms_all_parts'] / max(x['ok'], 1) * 1000), '{:.1f}')} |")
    return lines


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.2f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})" if xs else "–"


def main():
    bench_bin, wardgate_bin, out_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    recs = []
    sizes = {}
    for image in ("wardgate:local", "wardgate-tools:local", "wardgate-base/cc:bookworm"):
        p = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", image], capture_output=True, text=True)
        if p.returncode == 0:
            sizes[image] = int(p.stdout.strip()) / 1e6
    recs.append({"kind": "image_sizes_mb", "sizes": sizes})
    startup = {"single": [], "split": [], "container": []}
    e2e = {"single": [], "split": []}
    workers = {1: [], 2: [], 3: []}
    with tempfile.TemporaryDirectory() as work:
        r = Run(work, bench_bin, wardgate_bin)
        try:
            _, cloud = r.mosquitto()
            _, bus = r.mosquitto()
            # Start-up alone (file uplink: nothing to connect), then under load with the MQTT uplink.
            for _ in range(RUNS):
                startup["single"].append(r.single(cloud, uplink="file")["ready_s"])
                r.procs[-1].terminate()
                r.procs[-1].wait(timeout=20)
                r.procs.pop()
            for run in range(RUNS):
                for mode in ("single", "split"):
                    sut = r.single(cloud) if mode == "single" else r.split(cloud, bus)
                    if mode == "split":
                        startup["split"].append(sut["ready_s"])
                    rep = r.measure(f"deploy-{mode}", sut, cloud)
                    e2e[mode].append(rep)
                    recs.append({"kind": "e2e", "mode": mode, "run": run, "report": rep})
                    print(f"{mode} run {run}: acked {rep['ok_rps']:.0f}/s delivered "
                          f"{rep['e2e']['delivered_per_s']:.0f}/s e2e p99 {rep['e2e']['latency']['p99_ms']:.1f} ms",
                          file=sys.stderr)
            # 1, 2 and 3 uplinks workers sharing the bus ($share), the same adapter part in front.
            for run in range(RUNS):
                for n in (1, 2, 3):
                    # A bus of its own: the persistent sessions of the previous run's workers would
                    # keep their shares of the stream queued on a shared bus (see docs/scale-out.md).
                    _, wbus = r.mosquitto()
                    sut = r.workers(cloud, wbus, n, run)
                    rep = r.measure(f"deploy-workers-{n}", sut, cloud)
                    workers[n].append(rep)
                    recs.append({"kind": "workers", "workers": n, "run": run, "report": rep})
                    print(f"{n} workers run {run}: acked {rep['ok_rps']:.0f}/s delivered "
                          f"{rep['e2e']['delivered_per_s']:.0f}/s lost {rep['e2e']['lost_acked']}",
                          file=sys.stderr)
        finally:
            r.stop_all()
    try:
        startup["container"] = container_startup("wardgate:local", RUNS)
    except Exception as e:
        print(f"container start-up not measured: {e}", file=sys.stderr)
    recs.append({"kind": "startup_s", **startup})
    with open(out_dir / "deploy.jsonl", "w") as f:
        for rec in recs:
            f.write(json.dumps(rec) + "\n")

    def col(mode, f):
        return [f(x) for x in e2e[mode]]
    acked = lambda x: x["ok_rps"]
    delivered = lambda x: x["e2e"]["delivered_per_s"]
    p50 = lambda x: x["e2e"]["latency"]["p50_ms"]
    p99 = lambda x: x["e2e"]["latency"]["p99_ms"]
    ack99 = lambda x: x["ack_latency"]["p99_ms"]
    lost = lambda x: x["e2e"]["lost_acked"]
    dups = lambda x: x["e2e"].get("duplicates", 0)
    cpu = lambda x: x["sut_cpu_ms_all_parts"] / max(x["ok"], 1) * 1000
    lines = ["## Containers and split mode", "",
             f"`bench/deploy.sh` ({RUNS} runs each, {DURATION} s closed loop, 256 in flight, SenML JSON, CON; "
             "gateway processes pinned to core 0, load generator and Mosquitto on core 1; the split gateway's bus is a "
             "second Mosquitto on core 1). Cells: median (min–max). CPU is both parts' together.", "",
             "| gateway | acked /s | delivered /s | e2e p50 ms | e2e p99 ms | ack p99 ms | lost acked | CPU ms/1k |",
             "|---|---|---|---|---|---|---|---|"]
    for mode in ("single", "split"):
        if e2e[mode]:
            lines.append(f"| {mode} | {spread(col(mode, acked), '{:.0f}')} | {spread(col(mode, delivered), '{:.0f}')} | "
                         f"{spread(col(mode, p50), '{:.1f}')} | {spread(col(mode, p99), '{:.1f}')} | "
                         f"{spread(col(mode, ack99), '{:.1f}')} | {sum(col(mode, lost))} | {spread(col(mode, cpu), '{:.1f}')} |")
    if e2e["single"] and e2e["split"]:
        lines.append("")
        lines.append(f"Split / single, delivered: {med(col('split', delivered)) / med(col('single', delivered)):.2f}; "
                     f"CPU per reading: {med(col('split', cpu)) / med(col('single', cpu)):.2f}.")
    lines += ["", "| start-up to `/readyz` 200 | seconds |", "|---|---|",
              f"| single binary (file uplink) | {spread(startup['single'], '{:.3f}')} |",
              f"| split: `uplinks` part, then `coap` part (MQTT bus and uplink) | {spread(startup['split'], '{:.3f}')} |",
              f"| container (`docker run` → published `/readyz`) | {spread(startup['container'], '{:.3f}')} |",
              "", "| image | MB |", "|---|---|"]
    lines += [f"| `{k}` | {v:.1f} |" for k, v in sizes.items()]
    if any(workers.values()):
        lines += ["", "Uplink workers sharing the bus (`[split] shared_group`: an MQTT shared subscription on the "
                  "Mosquitto bus; the `coap` part and every worker on core 0, Mosquittos and load on core 1):", ""]
        lines += worker_table("uplinks workers", workers)
    (out_dir / "deploy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
