#!/usr/bin/env python3
"""wardgate benchmark orchestrator (called by bench/run.sh; standard library only).

  bench.py run    --out DIR [--quick] ...   run every scenario, append raw JSON lines to DIR
  bench.py report --raw FILE --out FILE     turn raw JSON lines into the Markdown report

Every system under test (SUT) runs pinned to core 0, the load generator and Mosquitto to core 1
(Mosquitto moves to core 0 when it is the SUT, in limit-broker; in limit-broker-shared it stays on
core 1 with the process that publishes and subscribes, as it is in the e2e scenarios). Runs alternate between systems
(A B C ... A B C ...), each run starts a fresh SUT, and a run during which other processes used
more than 20 % of a core is repeated (up to twice) and marked.

Loopback only: every address used here is 127.0.0.1.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# WARDGATE_BENCH_SUT_CORES="0,1" gives the system under test both cores (the 2-core figures of
# issue 15; the load generator and Mosquitto then share core 1 with it).
SUT_CORE = os.environ.get("WARDGATE_BENCH_SUT_CORES", "0")
LOAD_CORE = "1"
DISTURBED_PCT = 20.0
LADDER_RATES = [1000, 5000, 20000, 50000, 100000]
LADDER_STEP_S = 10
LADDER_MIN_DELIVERY = 0.999
LADDER_MAX_P99_MS = 50.0
SOAK_S = 300
# No repeats of disturbed runs after this many seconds (the soak and the report still follow).
REPEAT_BUDGET_S = 480

WARDGATE_SYSTEMS = ("wardgate-ingest", "wardgate-e2e-fsync", "wardgate-e2e-nofsync")
# The traffic monitor's overhead (issue 13): wardgate-ingest with flow records only, and with
# flow records plus a full pcapng capture of every datagram (payloads redacted, the default), and
# with flow records plus every anomaly detector (learning 0: all of them judging from the start).
MONITOR_SYSTEMS = ("wardgate-ingest-flows", "wardgate-ingest-capture", "wardgate-ingest-anomalies")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def monitor_config(system, data):
    """The [monitor] sections of the monitor-overhead systems (none for the others)."""
    out = ""
    if system in MONITOR_SYSTEMS:
        out += f'\n[monitor.flows]\nenabled = true\ndir = "{data}/flows"\n'
    if system == "wardgate-ingest-capture":
        out += f'\n[monitor.capture]\nenabled = true\ndir = "{data}/captures"\n'
    if system == "wardgate-ingest-anomalies":
        out += '\n[monitor.anomalies]\nenabled = true\nlearning = "0s"\n'
    return out


def free_port(kind=socket.SOCK_DGRAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(core, cmd):
    return ["taskset", "-c", core] + [str(c) for c in cmd]


def stop_process(proc, grace=10.0):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.raw = open(self.out / "results.jsonl", "a", encoding="utf-8")
        self.bench_bin = str(Path(args.bench_bin).absolute())
        self.wardgate_bin = str(Path(args.wardgate_bin).absolute())
        self.venv_python = str(Path(args.venv_python).absolute())
        self.mosq = None
        self.mosq_port = None
        self.duration = args.duration or (1.5 if self.quick else 3.0)
        self.runs = 1 if self.quick else args.runs
        self.retries = 0 if self.quick else 2
        # The latest throughput of each scenario in this run (rates relative to a reference).
        self.last_throughput = {}
        self.started = time.time()

    # ---- peers -------------------------------------------------------------------------------
    def start_mosquitto(self):
        self.mosq_port = free_port(socket.SOCK_STREAM)
        conf = self.work / "mosquitto.conf"
        conf.write_text(
            f"listener {self.mosq_port} 127.0.0.1\n"
            "allow_anonymous true\npersistence false\n"
            # Queue instead of dropping when the subscriber lags: the harness counts losses and
            # they must be the gateway's, not the broker's default 1000-message queue.
            "max_queued_messages 2000000\nmax_inflight_messages 1000\n"
            "set_tcp_nodelay true\n"
        )
        logf = open(self.work / "mosquitto.log", "ab")
        self.mosq = subprocess.Popen(pinned(LOAD_CORE, ["mosquitto", "-c", conf]), stdout=logf, stderr=logf)
        deadline = time.time() + 5
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.mosq_port), timeout=0.2).close()
                log(f"mosquitto on 127.0.0.1:{self.mosq_port} (pid {self.mosq.pid})")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def mosq_core(self, core):
        subprocess.run(["taskset", "-pc", core, str(self.mosq.pid)], stdout=subprocess.DEVNULL, check=False)

    # ---- systems under test ------------------------------------------------------------------
    def start_sut(self, system):
        """Starts a fresh SUT; returns (Popen, coap_port, extra) or raises."""
        port = free_port()
        logf = open(self.work / f"{system}.log", "ab")
        extra = {}
        if system == "limit-udp":
            cmd = [self.bench_bin, "udp-echo", "--listen", f"127.0.0.1:{port}", "--max-seconds", "900"]
        elif system == "libcoap":
            cmd = ["coap-server-notls", "-A", "127.0.0.1", "-p", port]
        elif system == "naive-bridge":
            cmd = [self.venv_python, ROOT / "bench/peers/naive_bridge.py", "--listen", "127.0.0.1", "--port", port,
                   "--mqtt-port", self.mosq_port, "--topic-prefix", "naive/bench", "--max-seconds", "900"]
        elif system.startswith("wardgate"):
            cfg, http = self.wardgate_config(system, port)
            extra["http"] = http
            cmd = [self.wardgate_bin, "run", "--config", cfg]
        else:
            raise ValueError(system)
        proc = subprocess.Popen(pinned(SUT_CORE, cmd), stdout=logf, stderr=logf, cwd=self.work)
        if "http" in extra:
            self.wait_http(proc, extra["http"])
        else:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(f"{system} exited at start with code {proc.returncode} (see {self.work}/{system}.log)")
        return proc, port, extra

    def wardgate_config(self, system, port):
        http = free_port(socket.SOCK_STREAM)
        data = self.work / f"data-{system}-{time.time_ns()}"
        data.mkdir(parents=True)
        durability = "unsafe-no-fsync" if "nofsync" in system else "fsync"
        if system.startswith("wardgate-ingest"):
            uplink = '[[uplinks]]\ntype = "file"\nname = "sink"\npath = "/dev/null"\n'
        else:
            uplink = (f'[[uplinks]]\ntype = "mqtt"\nname = "cloud"\nurl = "mqtt://127.0.0.1:{self.mosq_port}"\n'
                      'topic = "wardgate/{gateway}/{device}/{class}"\n')
        cfg = self.work / f"{system}.toml"
        cfg.write_text(
            '[gateway]\nid = "bench"\n\n[log]\nlevel = "warn"\n\n'
            f'[coap]\nlisten = ["127.0.0.1:{port}"]\n\n'
            f'[http]\nlisten = "127.0.0.1:{http}"\n\n'
            f'[store]\npath = "{data}/outbox.db"\ndurability = "{durability}"\n'
            # Extra [store] lines for A/B runs, e.g. WARDGATE_BENCH_STORE='delivery_log = "0s"'.
            + os.environ.get("WARDGATE_BENCH_STORE", "") + '\n\n' + uplink + monitor_config(system, data)
        )
        return cfg, http

    def wait_http(self, proc, http, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=0.5) as r:
                    if r.status == 200:
                        return
            except Exception:
                pass
            time.sleep(0.1)
        # Not fatal: the load generator's own CoAP readiness probe decides.

    def metrics_snapshot(self, http, name):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=2) as r:
                (self.out / f"metrics-{name}.txt").write_bytes(r.read())
        except Exception as e:
            log(f"no /metrics snapshot for {name}: {e}")

    # ---- one measurement ---------------------------------------------------------------------
    def loadgen(self, argv, timeout):
        cmd = pinned(LOAD_CORE, [self.bench_bin] + argv)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"wardgate-bench failed ({p.returncode}): {p.stderr.strip()[-500:]}")
        return json.loads(p.stdout.strip().splitlines()[-1])

    def coap_args(self, system, port, sut_pid, mode):
        a = ["coap-load", "--target", f"127.0.0.1:{port}", "--pid", sut_pid, "--peer-pid", self.mosq.pid,
             "--timeout", "2", "--label", system]
        if mode.get("rate"):
            a += ["--rate", mode["rate"], "--in-flight", "4096"]
        else:
            a += ["--in-flight", mode.get("in_flight", 256)]
        a += ["--duration", mode.get("duration", self.duration), "--format", mode.get("format", "senml-json"),
              "--type", mode.get("type", "con")]
        if mode.get("rss_series"):
            a += ["--rss-series", mode["rss_series"]]
        if system == "naive-bridge":
            a += ["--mqtt", f"mqtt://127.0.0.1:{self.mosq_port}", "--topic", "naive/bench/+/vital", "--drain-timeout", "10"]
        elif system.startswith("wardgate-e2e"):
            a += ["--mqtt", f"mqtt://127.0.0.1:{self.mosq_port}", "--topic", "wardgate/bench/+/vital", "--drain-timeout", "10"]
        return [str(x) for x in a]

    def measure(self, scenario, system, mode, run, retries=None):
        """One run of one scenario with the repeat-if-disturbed rule; writes raw lines. Repeats
        stop once the run has used its repeat budget (the full run must stay under 15 minutes
        on a busy machine too; a disturbed result is kept and marked)."""
        retries = self.retries if retries is None else retries
        if time.time() - self.started > REPEAT_BUDGET_S:
            retries = 0
        if mode.get("rate_of"):
            # An open-loop rate relative to a reference measured earlier in this run.
            base = self.last_throughput.get(mode["rate_of"])
            if not base:
                self.note(scenario, f"no {mode['rate_of']} result in this run to set the rate from")
                return None
            mode = dict(mode, rate=int(base * mode.get("fraction", 1.0)))
        for attempt in range(retries + 1):
            rec = {"scenario": scenario, "system": system, "run": run, "attempt": attempt,
                   "mode": {k: v for k, v in mode.items()}, "at": time.time()}
            try:
                rec["report"] = self.measure_once(scenario, system, mode, run)
            except Exception as e:
                rec["error"] = str(e)
                log(f"{scenario} run {run}: ERROR {e}")
                self.write(rec)
                return rec
            if throughput_of(rec["report"]):
                self.last_throughput[scenario] = throughput_of(rec["report"])
            other = rec["report"].get("cpu", {}).get("other_cpu_pct", 0.0)
            rec["disturbed"] = other > DISTURBED_PCT
            self.write(rec)
            log(f"{scenario} run {run}.{attempt}: {summary_line(rec['report'])}"
                + (f"  DISTURBED other-CPU {other:.0f}%" if rec["disturbed"] else ""))
            if not rec["disturbed"]:
                return rec
        return rec

    def measure_once(self, scenario, system, mode, run):
        if system in ("limit-broker", "limit-broker-shared"):
            # limit-broker: Mosquitto alone on the SUT core. limit-broker-shared: Mosquitto where
            # it is in the e2e scenarios, sharing the load core with the process that publishes
            # and subscribes (the issue 15 reference: "the same core split").
            if system == "limit-broker":
                self.mosq_core(SUT_CORE)
            try:
                return self.loadgen(["broker-limit", "--mqtt", f"mqtt://127.0.0.1:{self.mosq_port}", "--in-flight", "256",
                                     "--duration", str(mode.get("duration", self.duration)), "--pid", str(self.mosq.pid),
                                     "--label", scenario], timeout=120)
            finally:
                self.mosq_core(LOAD_CORE)
        proc, port, extra = self.start_sut(system)
        try:
            if mode.get("idle"):
                time.sleep(2)
                return self.loadgen(["sample", "--pid", str(proc.pid), "--duration", str(mode["idle"]), "--label", scenario],
                                    timeout=60)
            budget = float(mode.get("duration", self.duration)) + 60
            rep = self.loadgen(self.coap_args(system, port, proc.pid, mode), timeout=budget)
            if run == 0 and "http" in extra:
                self.metrics_snapshot(extra["http"], scenario)
            return rep
        finally:
            stop_process(proc)
            if proc.returncode not in (0, None, -signal.SIGTERM, 143):
                log(f"{system} exited with {proc.returncode}")

    def write(self, rec):
        self.raw.write(json.dumps(rec) + "\n")
        self.raw.flush()

    def lwm2m(self):
        """The LwM2M registration storm (bench/lwm2m.sh): 10,000 clients register, then are
        observed and send Confirmable notifications; and the same clients registering only, for
        the memory of an idle registration."""
        clients, rounds = (500, 1) if self.quick else (10000, 3)
        env = dict(os.environ, WARDGATE_BIN=self.args.wardgate_bin, BENCH_BIN=self.args.bench_bin)
        script = str(Path(__file__).with_name("lwm2m.sh"))
        for mode, observe, notify in (("observed", "1", "5"), ("registered", "0", "0")):
            try:
                out = subprocess.run(["bash", script, str(clients), notify, str(rounds), observe],
                                     env=env, capture_output=True, text=True, timeout=900, check=True)
                runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
                for i, rec in enumerate(runs):
                    rec.update({"scenario": f"lwm2m-storm:{mode}", "run": i, "at": time.time()})
                    self.write(rec)
            except Exception as e:
                self.write({"scenario": f"lwm2m-storm:{mode}", "error": str(e), "at": time.time()})
                log(f"lwm2m storm ({mode}) failed: {e}")

    def selector(self):
        """The uplink selector (bench/selector.sh, issue 11): failover under open-loop load with
        the preferred broker killed, and alarm latency while an outage's backlog drains; 3 rounds
        of each (quick: 1 tiny round, < 60 s)."""
        env = dict(os.environ, WARDGATE_BIN=self.args.wardgate_bin, BENCH_BIN=self.args.bench_bin)
        script = str(Path(__file__).with_name("selector.sh"))
        argv = ["bash", script] + (["--quick"] if self.quick else ["--rounds", "3"])
        try:
            out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900, check=True)
            for line in out.stdout.splitlines():
                if not line.startswith("{"):
                    continue
                rec = json.loads(line)
                sc, run = f"selector:{rec.pop('scenario')}", rec.pop("round")
                if "error" in rec:
                    self.write({"scenario": sc, "run": run, "error": rec["error"], "at": time.time()})
                    log(f"{sc} round {run}: ERROR {rec['error']}")
                else:
                    self.write({"scenario": sc, "run": run, "report": rec, "at": time.time()})
                    log(f"{sc} round {run}: {selector_line(rec)}")
        except Exception as e:
            self.write({"scenario": "selector", "error": str(e), "at": time.time()})
            log(f"selector scenarios failed: {e}")

    def https(self):
        """The HTTPS uplink against the MQTT uplink, and the HTTPS ingest with and without TLS
        (bench/https.sh, issue 11); 3 rounds (quick: 1 round of 3 s runs, < 40 s)."""
        env = dict(os.environ, WARDGATE_BIN=self.args.wardgate_bin, BENCH_BIN=self.args.bench_bin)
        script = str(Path(__file__).with_name("https.sh"))
        argv = ["bash", script] + (["--quick"] if self.quick else ["--rounds", "3"])
        try:
            out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200, check=True)
            for line in out.stdout.splitlines():
                if not line.startswith("{"):
                    continue
                rec = json.loads(line)
                sc, run = f"https:{rec.pop('scenario')}", rec.pop("round")
                if "error" in rec:
                    self.write({"scenario": sc, "run": run, "error": rec["error"], "at": time.time()})
                    log(f"{sc} round {run}: ERROR {rec['error']}")
                else:
                    self.write({"scenario": sc, "run": run, "report": rec, "at": time.time()})
                    log(f"{sc} round {run}: {https_line(rec)}")
        except Exception as e:
            self.write({"scenario": "https", "error": str(e), "at": time.time()})
            log(f"https scenarios failed: {e}")

    def note(self, scenario, text):
        self.write({"scenario": scenario, "not_measured": text, "at": time.time()})
        log(f"{scenario}: not measured: {text}")

    # ---- the whole programme -----------------------------------------------------------------
    def scenarios(self):
        d = self.duration
        s = [
            ("limit-udp", "limit-udp", {}),
            ("limit-broker", "limit-broker", {}),
            ("limit-broker-shared", "limit-broker-shared", {}),
            ("libcoap", "libcoap", {}),
            ("naive-bridge", "naive-bridge", {}),
            ("wardgate-ingest", "wardgate-ingest", {}),
            ("wardgate-ingest-flows", "wardgate-ingest-flows", {}),
            ("wardgate-ingest-capture", "wardgate-ingest-capture", {}),
            ("wardgate-ingest-anomalies", "wardgate-ingest-anomalies", {}),
            ("wardgate-e2e-fsync", "wardgate-e2e-fsync", {}),
            ("wardgate-e2e-nofsync", "wardgate-e2e-nofsync", {}),
            ("wardgate-e2e-cbor", "wardgate-e2e-fsync", {"format": "senml-cbor"}),
            ("wardgate-e2e-non", "wardgate-e2e-fsync", {"type": "non"}),
            ("wardgate-e2e-20k-open", "wardgate-e2e-fsync", {"rate": 20000, "duration": d}),
            # A ward-sized load: the cost per reading far from saturation (issue 15).
            ("wardgate-e2e-2k-open", "wardgate-e2e-fsync", {"rate": 2000, "duration": d}),
            # Delivery at the broker's pace (issue 15): open loop at 0.85 x what limit-broker-shared
            # measured in this run (its latest run before this one); is every reading delivered,
            # without a growing backlog?
            ("wardgate-e2e-broker-pace", "wardgate-e2e-fsync",
             {"rate_of": "limit-broker-shared", "fraction": 0.85, "duration": d}),
            ("wardgate-idle", "wardgate-e2e-fsync", {"idle": 2 if self.quick else 5}),
        ]
        only = set(self.args.only.split(",")) if self.args.only else None
        return [x for x in s if only is None or x[0] in only]

    def run_all(self):
        started = self.started
        if self.args.lwm2m_only:
            # Appends LwM2M storm runs to an existing full run's raw results.
            self.lwm2m()
            return
        if self.args.selector_only:
            # Appends the selector scenarios to an existing full run's raw results.
            self.selector()
            return
        if self.args.https_only:
            # Appends the HTTPS uplink and ingest scenarios to an existing full run's raw results.
            self.https()
            return
        if self.args.soak_only:
            # Appends a new soak to an existing full run's raw results (the report uses the last).
            self.start_mosquitto()
            try:
                self.soak()
            finally:
                stop_process(self.mosq)
            return
        self.write({"meta": machine(self.venv_python), "command": self.args.command_line, "quick": self.quick, "at": started})
        self.start_mosquitto()
        try:
            for run in range(self.runs):
                for scenario, system, mode in self.scenarios():
                    self.measure(scenario, system, mode, run)
            if not self.args.no_extras:
                self.lwm2m()
                self.selector()
                self.https()
            if not self.quick and not self.args.no_profile:
                for system in ("wardgate-ingest", "wardgate-e2e-fsync"):
                    try:
                        self.profile(system)
                    except Exception as e:
                        self.write({"scenario": f"profile:{system}", "error": str(e), "at": time.time()})
                        log(f"profile of {system} failed: {e}")
            if not self.quick and not self.args.no_ladder:
                self.ladder()
            if not self.quick and not self.args.no_soak:
                self.soak()
        finally:
            stop_process(self.mosq)
        self.write({"finished": time.time(), "elapsed_s": time.time() - started})
        log(f"done in {time.time() - started:.0f} s")

    def profile(self, system):
        """One extra closed-loop run of `system` under `perf record -e cpu-clock` with DWARF call
        graphs (a software event: this VM has no hardware counters, `perf stat -e instructions`
        is not supported). Writes profile-<system>.txt: inclusive shares of the functions that
        own the work (wardgate crates, SQLite, rumqttc, syscalls) and the top self-time symbols."""
        if not shutil.which("perf"):
            self.note(f"profile:{system}", "perf is not installed")
            return
        data = self.work / f"perf-{system}.data"
        proc, port, _ = self.start_sut(system)
        try:
            d = max(self.duration, 5)
            perf = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "499", "--call-graph", "dwarf,16384",
                                     "-o", data, "-p", str(proc.pid), "--", "sleep", str(d)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            rep = self.loadgen(self.coap_args(system, port, proc.pid, {"duration": d}), timeout=d + 60)
            perf.wait(timeout=60)
        finally:
            stop_process(proc)
        self.write({"scenario": f"profile:{system}", "run": 0, "attempt": 0, "report": rep, "profiled": True,
                    "at": time.time()})

        def perf_report(*extra):
            out = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "symbol", "-g", "none", *extra],
                                 capture_output=True, text=True, timeout=600).stdout
            rows = []
            for line in out.splitlines():
                if not line.strip() or line.startswith("#") or "(inlined)" in line:
                    continue
                rows.append(" ".join(line.split()).replace(" - -", ""))
            return rows
        owners = re.compile(r"wardgate|sqlite3_step|rumqttc|__sys_sendto|__sys_recvfrom|do_fsync|sys_pwrite|"
                            r"epoll_wait|sys_futex|malloc|serde_json")
        inclusive = [r for r in perf_report("--children", "--percent-limit", "0.8") if owners.search(r)]
        flat = perf_report("--no-children", "--percent-limit", "0.7")
        (self.out / f"profile-{system}.txt").write_text(
            f"# {system}, closed loop, during: {summary_line(rep)}\n"
            "# perf record -e cpu-clock -F 499 --call-graph dwarf -p <wardgate>\n\n"
            "## Inclusive (children) share of wardgate's CPU samples, selected owners\n"
            + "\n".join(inclusive[:80]) + "\n\n## Self time, top symbols\n" + "\n".join(flat[:40]) + "\n")
        log(f"profile written to {self.out}/profile-{system}.txt")

    def ladder(self):
        for system in ("libcoap", "naive-bridge", "wardgate-ingest", "wardgate-e2e-fsync"):
            for rate in LADDER_RATES:
                rec = self.measure(f"ladder:{system}", system, {"rate": rate, "duration": LADDER_STEP_S}, rate, retries=1)
                if not ladder_pass(rec):
                    break

    def soak(self):
        """300 s at half of wardgate's end-to-end maximum: the *delivered* rate of the closed-loop
        runs, not the acknowledged one (ingest can outrun delivery, and half of an ack rate the
        uplink cannot follow grows a backlog instead of testing memory at a steady state)."""
        runs = [r["report"] for r in read_raw(self.out / "results.jsonl")
                if r.get("scenario") == "wardgate-e2e-fsync" and "report" in r and not r.get("disturbed")]
        delivered = [min(x["ok_rps"], (x.get("e2e") or {}).get("delivered_per_s") or x["ok_rps"]) for x in runs]
        if not delivered:
            self.note("soak", "no undisturbed wardgate-e2e-fsync run to take the max rate from")
            return
        rate = max(100, int(statistics.median(delivered) / 2 // 100 * 100))
        self.measure("soak", "wardgate-e2e-fsync", {"rate": rate, "duration": SOAK_S, "rss_series": 5,
                                                    "rate_rule": "half of wardgate-e2e-fsync's median delivered rate"},
                     0, retries=0)


def ladder_pass(rec):
    rep = rec.get("report")
    if not rep or not rep.get("sent"):
        return False
    e2e = rep.get("e2e")
    delivered = (e2e["unique"] if e2e else rep["ok"] or rep["responses"]) / scheduled(rec)
    p99 = max((rep.get("ack_latency") or {}).get("p99_ms", 1e9), ((e2e or {}).get("latency") or {}).get("p99_ms", 0))
    if e2e and not e2e.get("latency"):
        p99 = 1e9
    return delivered >= LADDER_MIN_DELIVERY and p99 <= LADDER_MAX_P99_MS


def scheduled(rec):
    """Requests an open-loop run was meant to send (a sender held back by its in-flight window
    sends fewer: those count as not delivered)."""
    rep, mode = rec.get("report") or {}, rec.get("mode") or {}
    if mode.get("rate") and mode.get("duration"):
        return max(1, round(float(mode["rate"]) * float(mode["duration"])))
    return max(1, rep.get("sent", 0))


def summary_line(rep):
    if rep.get("tool") == "sample":
        return f"idle RSS {rep['sut_memory']['rss_end_kb'] / 1024:.1f} MiB, HWM {rep['sut_memory']['vm_hwm_kb'] / 1024:.1f} MiB"
    lat = rep.get("ack_latency") or (rep.get("e2e") or {}).get("latency") or {}
    e2e = rep.get("e2e") or {}
    s = f"{rep.get('throughput_rps', 0):,.0f}/s p50 {lat.get('p50_ms', float('nan')):.2f} p99 {lat.get('p99_ms', float('nan')):.2f} ms"
    if rep.get("tool") == "coap-load":
        s += f" ok {rep['ok']}/{rep['sent']} 5.03 {rep['busy_503']} to {rep['timeouts']}"
        if e2e:
            el = e2e.get("latency") or {}
            s += f" | e2e {e2e['unique']}/{rep['sent']} dup {e2e['duplicates']} p99 {el.get('p99_ms', float('nan')):.2f} ms"
    cpu = rep.get("cpu", {}).get("sut_cpu_ms_per_1k")
    if cpu is not None:
        s += f" | {cpu:.2f} ms CPU/1k"
    return s


def selector_line(rep):
    if rep.get("tool") == "failover":
        return (f"kill → backup {fmt(rep.get('first_at_backup_after_kill_ms'))} ms, delayed > 1 s {rep.get('delayed')}, "
                f"missing {rep.get('acked_missing')} (lost in broker {rep.get('lost_in_killed_broker')}), "
                f"order violations {rep.get('order_violations_backup')}")
    d = rep.get("during_drain") or {}
    return (f"drain {fmt((rep.get('drain') or {}).get('drain_s'))} s, {d.get('sent')} alarms, p99 "
            f"{fmt((d.get('latency') or {}).get('p99_ms'))} ms (baseline "
            f"{fmt(((rep.get('baseline') or {}).get('latency') or {}).get('p99_ms'))} ms)")


def selector_section(w, by, raw_path):
    """## Uplink selector: medians (min–max) over the rounds of bench/selector.sh."""
    fo = [r["report"] for r in by.get("selector:failover", []) if "report" in r]
    ab = [r["report"] for r in by.get("selector:alarm-backlog", []) if "report" in r]
    errs = [r["error"] for sc in ("selector:failover", "selector:alarm-backlog", "selector")
            for r in by.get(sc, []) if "error" in r]
    if not (fo or ab or errs):
        return
    w("\n## Uplink selector (issue 11, `bench/selector.sh`)\n")
    w("Command: `bench/selector.sh` (3 rounds of each scenario, about 90 s; also run by `bench/run.sh`, "
      "and `--quick` by `bench/run.sh --quick`). Each round starts its own Mosquitto brokers (queues lifted: "
      "`max_queued_messages 2000000`, `max_queued_bytes 0`) and a fresh release gateway (durable outbox, fsync) "
      "on free loopback ports; gateway on core 0, generator and brokers on core 1. End-to-end latency is CoAP "
      "send (open loop: the *scheduled* send time) → first arrival at a QoS 1 subscriber of either broker.\n")
    ats = [r.get("at") for sc in ("selector:failover", "selector:alarm-backlog") for r in by.get(sc, []) if r.get("at")]
    loads = [r["report"].get("loadavg_1m") for r in by.get("selector:failover", []) + by.get("selector:alarm-backlog", [])
             if "report" in r]
    if ats:
        w(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(max(ats)))}; 1-minute load average at the end "
          f"of the rounds {cell(loads)} (the rounds' own processes make about 2 on these 2 cores).\n")
    if errs:
        w(f"Failed rounds: {len(errs)} (first: {errs[0][:200]}).\n")

    def g(rep, *path):
        for k in path:
            rep = (rep or {}).get(k) if isinstance(rep, dict) else None
        return rep

    def row(label, xs, digits=2):
        w(f"| {label} | {cell(xs, digits)} |")

    if fo:
        r0 = fo[0]
        w(f"**Failover under load** (`wardgate-bench failover`): {fmt(r0['rate'], 0)} vitals/s, Confirmable SenML "
          f"JSON, {r0['devices']} devices, for {fmt(r0['duration_s'], 0)} s; `vital` fails over "
          "`[\"cloud\", \"backup\"]`, `alarm` is redundant; uplinks `reconnect_min 50ms`, `reconnect_max 500ms`, "
          f"`keep_alive 5s`. At {fmt(r0['killed_at_s'], 0)} s the cloud broker is killed with SIGKILL. "
          "Windows are by scheduled send time: before the kill; the outage (kill → first reading at the backup); "
          f"after the switch. Rounds: {len(fo)}.\n")
        w("| figure | median (min–max) |")
        w("|---|---|")
        row("readings sent", [x["sent"] for x in fo], 0)
        row("acknowledged to the device (2.01)", [x["ok"] for x in fo], 0)
        row("kill → first reading at the backup, ms", [x.get("first_at_backup_after_kill_ms") for x in fo], 0)
        row("readings delayed (end-to-end > 1 s)", [x.get("delayed") for x in fo], 0)
        row("max end-to-end latency, ms", [g(x, "latency", "max_ms") for x in fo], 0)
        for name, key in (("before the kill", "latency_before_kill"), ("during the outage", "latency_outage"),
                          ("after the switch", "latency_after_switch")):
            row(f"end-to-end p50 {name}, ms", [g(x, key, "p50_ms") for x in fo])
            row(f"end-to-end p99 {name}, ms", [g(x, key, "p99_ms") for x in fo])
        row("acknowledged, received at neither broker", [x.get("acked_missing") for x in fo], 0)
        row("… lost in the killed broker (its PUBACKs to the gateway − its subscriber's receipts)",
            [x.get("lost_in_killed_broker") for x in fo], 0)
        row("… unexplained", [x.get("unexplained_missing") for x in fo], 0)
        row("received at both brokers", [x.get("at_both") for x in fo], 0)
        row("moved by the cutover (`wardgate_store_released_total{uplink=\"cloud\"}`)",
            [g(x, "gateway", "primary_released") for x in fo], 0)
        row("per-device order violations at the backup", [x.get("order_violations_backup") for x in fo], 0)
        row("CoAP answer p99 (context), ms", [g(x, "ack_latency", "p99_ms") for x in fo])
        w("")
    if ab:
        r0 = ab[0]
        w(f"**Alarm latency while a backlog drains** (`wardgate-bench alarm-backlog`): the only uplink's broker "
          f"(persistence on, the subscriber's session kept) is stopped with SIGTERM, {r0['backlog_sent']:,} vitals "
          "are sent (closed loop, 256 in flight), the broker is started again on the same port, and from the first "
          "backlog reading at the subscriber one alarm (`?class=alarm`) is sent every 20 ms until the backlog has "
          "drained. Baseline: 50 alarms with no backlog, before the outage. The alarm budget is 1 s. "
          f"Rounds: {len(ab)}.\n")
        w("| figure | median (min–max) |")
        w("|---|---|")
        row("backlog acknowledged", [x["backlog_acked"] for x in ab], 0)
        row("broker ready → first backlog reading at the subscriber (reconnect), s",
            [g(x, "drain", "reconnect_s") for x in ab])
        row("broker ready → last backlog reading (drain time), s", [g(x, "drain", "drain_s") for x in ab])
        row("drain rate, readings/s", [g(x, "drain", "rate_per_s") for x in ab], 0)
        row("alarms sent during the drain", [g(x, "during_drain", "sent") for x in ab], 0)
        for q in ("p50", "p99", "max"):
            row(f"alarm end-to-end {q} during the drain, ms", [g(x, "during_drain", "latency", f"{q}_ms") for x in ab])
        row("alarm CoAP answer p99 during the drain, ms", [g(x, "during_drain", "ack_latency", "p99_ms") for x in ab])
        row("alarms over the 1 s budget", [g(x, "during_drain", "over_budget") for x in ab], 0)
        for q in ("p50", "p99", "max"):
            row(f"alarm end-to-end {q}, no backlog, ms", [g(x, "baseline", "latency", f"{q}_ms") for x in ab])
        row("backlog readings that arrived after an alarm (median over the alarms)",
            [x.get("overtaken_median") for x in ab], 0)
        row("per-device order violations in the backlog", [g(x, "drain", "order_violations") for x in ab], 0)
        w("")
    notes = Path(raw_path).with_name("selector-notes.md")
    if notes.exists():
        w(notes.read_text().rstrip())


HTTPS_UPLINKS = ("mqtt", "https", "https-gzip", "https-b50")
HTTPS_INGEST = ("tls", "plain")


def https_line(rep):
    if rep.get("tool") == "uplink-e2e":
        d = rep.get("https") or rep.get("mqtt") or {}
        s = (f"acked {fmt(rep.get('ok_rps'), 0)}/s, delivered {fmt(d.get('delivered_per_s'), 0)}/s, "
             f"e2e p99 {fmt((d.get('latency') or {}).get('p99_ms'))} ms, missing {d.get('acked_missing')}")
        if rep.get("https"):
            s += f", {fmt(d.get('requests_per_s'), 0)} req/s, batch {fmt(d.get('mean_batch'), 0)}"
    else:
        s = (f"{fmt(rep.get('requests_per_s'), 0)} req/s, 201 p99 {fmt((rep.get('latency_201') or {}).get('p99_ms'))} ms, "
             f"statuses {rep.get('statuses')}, errors {rep.get('errors')}")
    cpu = (rep.get("cpu") or {}).get("sut_cpu_ms_per_1k")
    return s + (f" | {cpu:.2f} ms CPU/1k" if cpu is not None else "")


def https_section(w, by, raw_path):
    """## HTTPS uplink and ingest: medians (min–max) over the rounds of bench/https.sh."""
    up = {v: [r["report"] for r in by.get(f"https:uplink:{v}", []) if "report" in r] for v in HTTPS_UPLINKS}
    ing = {v: [r["report"] for r in by.get(f"https:ingest:{v}", []) if "report" in r] for v in HTTPS_INGEST}
    scs = [f"https:uplink:{v}" for v in HTTPS_UPLINKS] + [f"https:ingest:{v}" for v in HTTPS_INGEST]
    errs = [f"{sc}: {r['error']}" for sc in scs for r in by.get(sc, []) if "error" in r]
    if not (any(up.values()) or any(ing.values()) or errs):
        return
    w("\n## HTTPS uplink and ingest (issue 11, `bench/https.sh`)\n")
    w("Command: `bench/https.sh` (3 rounds, about 3.5 min; also run by `bench/run.sh`, and `--quick` by "
      "`bench/run.sh --quick`). Every run starts a fresh release gateway (durable outbox, fsync) on free "
      "loopback ports, gateway on core 0, generator on core 1. Cells are median (min–max) over the rounds; "
      "the order of the runs rotates by round.\n")
    allr = [x for v in list(up.values()) + list(ing.values()) for x in v]
    ats = [r.get("at") for sc in scs for r in by.get(sc, []) if r.get("at")]
    if ats:
        w(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(max(ats)))}; 1-minute load average at the "
          f"end of the runs {cell([x.get('loadavg_1m') for x in allr])}.\n")
    if errs:
        w(f"Failed runs: {len(errs)} (first: {errs[0][:200]}).\n")

    def g(rep, *path):
        for k in path:
            rep = (rep or {}).get(k) if isinstance(rep, dict) else None
        return rep

    if any(up.values()):
        r0 = next(x for v in up.values() for x in v)
        w(f"**Uplink throughput** (`wardgate-bench uplink-e2e`): closed-loop Confirmable CoAP vitals (SenML JSON, "
          f"{r0['in_flight']} in flight, {r0['devices']} devices) for {fmt(r0['duration_s'], 0)} s into a gateway "
          "with exactly one uplink. `mqtt`: to its own Mosquitto (queues lifted), a QoS 1 subscriber in the generator "
          "records every reading. `https*`: the generator is also the endpoint, HTTP/1.1 over TLS 1.3 (rustls, "
          "a self-signed certificate made per run with rcgen, trusted by the gateway through `ca_file`), answering "
          "200 after parsing each JSON array; `https` is `batch_max_readings = 500`, `linger = 20ms` (the "
          "defaults), `https-gzip` adds `gzip = true`, `https-b50` is `batch_max_readings = 50`. Delivered/s = "
          "distinct readings received ÷ (first send → last first receipt); end-to-end = CoAP send → receipt by the "
          "subscriber or the endpoint (whole request body read). Gateway CPU is per 1000 acknowledged readings "
          "over the send phase and the drain. Load-side CPU: the generator (with the endpoint or the subscriber) "
          "and Mosquitto, % of one core.\n")
        w("| uplink | runs | CoAP acked /s | delivered /s | e2e p50 ms | e2e p99 ms | acked, not delivered | "
          "requests /s | readings / request | wire bytes / reading | gateway CPU ms/1k | load-side CPU % | other CPU % |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for v, xs in up.items():
            if not xs:
                continue
            key = "mqtt" if v == "mqtt" else "https"
            d = [x.get(key) or {} for x in xs]
            https = key == "https"
            w(f"| {v} | {len(xs)} | {cell([x.get('ok_rps') for x in xs], 0)} "
              f"| {cell([y.get('delivered_per_s') for y in d], 0)} "
              f"| {cell([g(y, 'latency', 'p50_ms') for y in d])} | {cell([g(y, 'latency', 'p99_ms') for y in d])} "
              f"| {cell([y.get('acked_missing') for y in d], 0)} "
              f"| {cell([y.get('requests_per_s') for y in d], 0) if https else '–'} "
              f"| {cell([y.get('mean_batch') for y in d], 0) if https else '1'} "
              f"| {cell([y.get('wire_bytes_per_reading') for y in d], 0) if https else '–'} "
              f"| {cell([g(x, 'cpu', 'sut_cpu_ms_per_1k') for x in xs])} "
              f"| {cell([load_side_pct(x) for x in xs], 0)} | {cell([g(x, 'cpu', 'other_cpu_pct') for x in xs], 0)} |")
        hs = [x.get("https") or {} for v in ("https", "https-gzip", "https-b50") for x in up[v]]
        ms = [x.get("mqtt") or {} for x in up["mqtt"]]
        w("")
        w(f"Checks over all uplink runs: duplicates {sum((y.get('duplicates') or 0) for y in hs + ms)}, per-device "
          f"order violations {sum((y.get('order_violations') or 0) for y in hs + ms)}, requests the endpoint refused "
          f"{sum((y.get('refused_requests') or 0) for y in hs)}, gateway HTTPS retries "
          f"{sum((y.get('gateway_retries') or 0) for y in hs):.0f}, TLS connections per run "
          f"{cell([y.get('connections') for y in hs], 0)}, gzip compression "
          f"{cell([(x.get('https') or {}).get('compression_ratio') for x in up['https-gzip']], 1)}×, CoAP p99 "
          f"answer ms by uplink: "
          + ", ".join(f"{v} {cell([g(x, 'ack_latency', 'p99_ms') for x in up[v]])}" for v in HTTPS_UPLINKS if up[v])
          + ".\n")
    if any(ing.values()):
        r0 = next(x for v in ing.values() for x in v)
        w(f"**Ingest requests/s** (`wardgate-bench https-ingest-load`): {r0['connections']} devices, each its own "
          "keep-alive HTTP/1.1 connection with one request in flight (closed loop), POST "
          f"`/v1/devices/{{id}}/readings`, `application/senml+json` ({r0['payload_bytes']} bytes: SpO2, heart rate, "
          f"seq), for {fmt(r0['duration_s'], 0)} s; connections are opened before the timed phase. `tls`: "
          "`[ingest.http.tls]` with a self-signed certificate (rcgen) the client trusts; `plain`: `allow_plain = true`. "
          "No `[registry]` (tokens unchecked). The only uplink is a file (`/dev/null`). Latency is request → 201, "
          "which the gateway answers only once the reading is durable (fsync). CPU is per 1000 201s.\n")
        w("| ingest | runs | requests /s | 201 p50 ms | 201 p99 ms | 201 max ms | other statuses | no answer | "
          "connect p50 ms | gateway CPU ms/1k | load-side CPU % | other CPU % |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for v, xs in ing.items():
            if not xs:
                continue
            other = {}
            for x in xs:
                for st, n in (x.get("statuses") or {}).items():
                    if str(st) != "201":
                        other[st] = other.get(st, 0) + n
            w(f"| {v} | {len(xs)} | {cell([x.get('requests_per_s') for x in xs], 0)} "
              f"| {cell([g(x, 'latency_201', 'p50_ms') for x in xs])} | {cell([g(x, 'latency_201', 'p99_ms') for x in xs])} "
              f"| {cell([g(x, 'latency_201', 'max_ms') for x in xs])} "
              f"| {', '.join(f'{k}: {n}' for k, n in sorted(other.items())) or 'none'} "
              f"| {sum(x.get('errors') or 0 for x in xs)} "
              f"| {cell([g(x, 'connect', 'p50_ms') for x in xs])} "
              f"| {cell([g(x, 'cpu', 'sut_cpu_ms_per_1k') for x in xs])} "
              f"| {cell([load_side_pct(x) for x in xs], 0)} | {cell([g(x, 'cpu', 'other_cpu_pct') for x in xs], 0)} |")
        w("")
    notes = Path(raw_path).with_name("https-notes.md")
    if notes.exists():
        w(notes.read_text().rstrip())


def machine(venv_python="python3"):
    def read(p):
        try:
            return Path(p).read_text()
        except OSError:
            return ""
    model = next((l.split(":", 1)[1].strip() for l in read("/proc/cpuinfo").splitlines() if l.startswith("model name")), "?")
    mem = next((l.split(":", 1)[1].strip() for l in read("/proc/meminfo").splitlines() if l.startswith("MemTotal")), "?")
    try:
        mem = f"{int(mem.split()[0]) / 1024 / 1024:.1f} GiB"
    except (ValueError, IndexError):
        pass

    def ver(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception:
            return "?"
    fs = "?"
    try:
        fs = subprocess.run(["df", "-T", "/tmp"], capture_output=True, text=True).stdout.splitlines()[1].split()[1]
    except Exception:
        pass
    return {
        "nproc": os.cpu_count(), "cpu_model": model, "memory": mem, "kernel": platform.release(),
        "virtualization": ver(["systemd-detect-virt"]), "tmp_fs": fs,
        "rustc": ver(["rustc", "--version"]), "mosquitto": ver(["mosquitto", "-h"]),
        "libcoap": "libcoap3-bin " + ver(["dpkg-query", "-W", "-f=${Version}", "libcoap3-bin"]),
        "python": ver([venv_python, "--version"]),
    }


# ---- report --------------------------------------------------------------------------------------
def read_raw(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rng(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else None


def fmt(x, digits=2):
    if x is None:
        return "–"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def cell(xs, digits=2):
    m, r = med(xs), rng(xs)
    if m is None:
        return "–"
    if r and len([x for x in xs if x is not None]) > 1:
        return f"{fmt(m, digits)} ({fmt(r[0], digits)}–{fmt(r[1], digits)})"
    return fmt(m, digits)


def load_side_pct(rep):
    """CPU of the load generator plus its peers (Mosquitto), in % of one core: they share core 1,
    so near 100 % the generator side, not the system under test, was the limit."""
    c = rep.get("cpu") or {}
    sut, me, peers = c.get("sut_cpu_ms") or 0.0, c.get("loadgen_cpu_ms") or 0.0, sum(c.get("peers_cpu_ms") or [])
    if sut + me + peers <= 0 or c.get("system_busy_pct") is None:
        return None
    return (c["system_busy_pct"] - c.get("other_cpu_pct", 0.0)) * (me + peers) / (sut + me + peers)


def throughput_of(rep):
    if rep.get("tool") == "coap-load" and rep.get("ok"):
        return rep["ok_rps"]
    return rep.get("throughput_rps")


def latency_of(rep):
    return rep.get("ack_latency") or (rep.get("e2e") or {}).get("latency") or {}


def final_records(raw):
    """The last attempt of each (scenario, run): what the table uses."""
    last = {}
    for r in raw:
        if "scenario" in r and "run" in r:
            last[(r["scenario"], r["run"])] = r
    by = {}
    for (sc, _), r in sorted(last.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        by.setdefault(sc, []).append(r)
    return by


def headline(by):
    """The medians the targets and the before/after table are about."""
    def med_of(sc, f):
        return med([f(r["report"]) for r in by.get(sc, []) if "report" in r])

    idle = [r["report"] for r in by.get("wardgate-idle", []) if "report" in r]
    soak = [r["report"] for r in by.get("soak", []) if "report" in r]
    mem = soak[-1]["sut_memory"] if soak else {}
    sustainable = {}
    for sc, recs in by.items():
        if sc.startswith("ladder:"):
            passed = [r["run"] for r in recs if ladder_pass(r)]
            sustainable[sc.split(":", 1)[1]] = max(passed) if passed else None
    return {
        "e2e_acked": med_of("wardgate-e2e-fsync", throughput_of),
        "e2e_delivered": med_of("wardgate-e2e-fsync", lambda x: (x.get("e2e") or {}).get("delivered_per_s")),
        "ingest": med_of("wardgate-ingest", throughput_of),
        "limit_broker": med_of("limit-broker", throughput_of),
        "limit_broker_shared": med_of("limit-broker-shared", throughput_of),
        "naive_bridge": med_of("naive-bridge", throughput_of),
        "libcoap": med_of("libcoap", throughput_of),
        "limit_udp": med_of("limit-udp", throughput_of),
        # Distinct readings delivered per second over the send phase and the drain after it: a
        # backlog left at the end of the send phase lowers it.
        "pace_delivered": med_of("wardgate-e2e-broker-pace",
                                 lambda x: (x.get("e2e") or {}).get("delivered_per_s")),
        "pace_p99_e2e": med_of("wardgate-e2e-broker-pace",
                               lambda x: ((x.get("e2e") or {}).get("latency") or {}).get("p99_ms")),
        "p99_ack_20k": med_of("wardgate-e2e-20k-open", lambda x: latency_of(x).get("p99_ms")),
        "p99_e2e_20k": med_of("wardgate-e2e-20k-open",
                              lambda x: ((x.get("e2e") or {}).get("latency") or {}).get("p99_ms")),
        "idle_rss": med([x["sut_memory"]["rss_end_kb"] / 1024 for x in idle]) if idle else None,
        "cpu_2k": med_of("wardgate-e2e-2k-open", lambda x: x["cpu"].get("sut_cpu_ms_per_1k")),
        "rss_e2e": med_of("wardgate-e2e-fsync", lambda x: x["sut_memory"]["rss_max_kb"] / 1024),
        "cpu_e2e": med_of("wardgate-e2e-fsync", lambda x: x["cpu"].get("sut_cpu_ms_per_1k")),
        "cpu_ingest": med_of("wardgate-ingest", lambda x: x["cpu"].get("sut_cpu_ms_per_1k")),
        "ingest_flows": med_of("wardgate-ingest-flows", throughput_of),
        "ingest_capture": med_of("wardgate-ingest-capture", throughput_of),
        "ingest_anomalies": med_of("wardgate-ingest-anomalies", throughput_of),
        "cpu_ingest_flows": med_of("wardgate-ingest-flows", lambda x: x["cpu"].get("sut_cpu_ms_per_1k")),
        "cpu_ingest_capture": med_of("wardgate-ingest-capture", lambda x: x["cpu"].get("sut_cpu_ms_per_1k")),
        "p99_ack_closed": med_of("wardgate-e2e-fsync", lambda x: latency_of(x).get("p99_ms")),
        "p99_e2e_closed": med_of("wardgate-e2e-fsync",
                                 lambda x: ((x.get("e2e") or {}).get("latency") or {}).get("p99_ms")),
        "soak_rate": soak[-1].get("rate_target") if soak else None,
        "soak_rss_end": mem["rss_end_kb"] / 1024 if mem else None,
        "soak_rss_max": mem["rss_max_kb"] / 1024 if mem else None,
        "sustainable_e2e": sustainable.get("wardgate-e2e-fsync"),
        "sustainable_ingest": sustainable.get("wardgate-ingest"),
    }


def before_after(w, base_by, by, base_path):
    """Medians of the baseline run next to this run's: the record the issue asks for when a cost is
    fixed. Both are whole-system runs on the same kind of machine; ratios to the peers measured in
    the same run are the fairer comparison, so they are listed too."""
    b, a = headline(base_by), headline(by)

    def ratio(h, x, y):
        return h[x] / h[y] if h.get(x) is not None and h.get(y) else None

    for h in (b, a):
        h["r_broker"] = ratio(h, "e2e_acked", "limit_broker")
        h["r_naive"] = ratio(h, "e2e_acked", "naive_bridge")
        h["r_libcoap"] = ratio(h, "ingest", "libcoap")
    rows = [
        ("wardgate-ingest acked/s", "ingest", "higher"),
        ("wardgate-e2e-fsync acked/s", "e2e_acked", "higher"),
        ("wardgate-e2e-fsync delivered/s", "e2e_delivered", "higher"),
        ("CPU ms per 1k readings, ingest", "cpu_ingest", "lower"),
        ("CPU ms per 1k readings, e2e fsync", "cpu_e2e", "lower"),
        ("p99 ack, e2e closed loop, ms", "p99_ack_closed", "lower"),
        ("p99 e2e, e2e closed loop, ms", "p99_e2e_closed", "lower"),
        ("p99 ack at 20k/s open loop, ms", "p99_ack_20k", "lower"),
        ("p99 e2e at 20k/s open loop, ms", "p99_e2e_20k", "lower"),
        ("sustainable rate, wardgate-ingest (ladder)", "sustainable_ingest", "higher"),
        ("sustainable rate, wardgate-e2e-fsync (ladder)", "sustainable_e2e", "higher"),
        ("idle RSS, MiB", "idle_rss", "lower"),
        ("soak rate, readings/s (the RSS rows depend on it)", "soak_rate", None),
        ("soak RSS at the end, MiB", "soak_rss_end", "lower"),
        ("soak RSS max, MiB", "soak_rss_max", "lower"),
        ("ratio e2e / limit-broker (same run)", "r_broker", "higher"),
        ("ratio e2e / naive-bridge (same run)", "r_naive", "higher"),
        ("ratio ingest / libcoap (same run)", "r_libcoap", "higher"),
        ("limit-broker msg/s (reference)", "limit_broker", None),
        ("libcoap answers/s (reference)", "libcoap", None),
    ]
    base_meta = next((r for r in read_raw(base_path) if "meta" in r), {})
    when = time.strftime("%Y-%m-%d", time.gmtime(base_meta.get("at", 0))) if base_meta else "?"
    w(f"\n## Before and after\n")
    w(f"Medians of the baseline run (`docs/bench-raw/baseline/`, {when}; see its README for what changed since) "
      "and of this run. Absolute numbers on a shared 2-core VM move by ±15 % between runs; the ratios to the "
      "peers measured in the same run are the steadier comparison.\n")
    w("| measure | before | after | change |")
    w("|---|---|---|---|")
    for name, key, better in rows:
        x, y = b.get(key), a.get(key)
        change = "–"
        if x is not None and y is not None and x:
            pct = 100.0 * (y - x) / x
            good = better and ((pct > 0) == (better == "higher"))
            change = f"{pct:+.0f} %" + ("" if not better or abs(pct) < 5 else (" (better)" if good else " (worse)"))
        w(f"| {name} | {fmt(x)} | {fmt(y)} | {change} |")


def report(raw_path, out_path, command):
    raw = read_raw(raw_path)
    meta = next((r for r in raw if "meta" in r), {})
    m = meta.get("meta", {})
    by = final_records(raw)
    attempts = {}
    for r in raw:
        if "scenario" in r and "run" in r:
            attempts[r["scenario"]] = attempts.get(r["scenario"], 0) + 1
    lines = []
    w = lines.append
    w("# wardgate benchmarks\n")
    w("Generated by `bench/run.sh` from the raw results in `docs/bench-raw/` (do not edit by hand; "
      "regenerate with `python3 bench/bench.py report --raw docs/bench-raw/results.jsonl --out docs/benchmarks.md`).\n")
    w(f"- Command: `{(command or meta.get('command', '?')).strip()}`")
    w(f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(meta.get('at', time.time())))}")
    w(f"- Machine: {m.get('nproc', '?')} CPUs ({m.get('cpu_model', '?')}, {m.get('virtualization', '?')}), "
      f"{m.get('memory', '?')} RAM, Linux {m.get('kernel', '?')}, outbox on {m.get('tmp_fs', '?')}")
    w(f"- Peers: {m.get('mosquitto', '?')}; {m.get('libcoap', '?')}; {m.get('python', '?')} (naive bridge: aiocoap + paho-mqtt); {m.get('rustc', '?')}")
    w("- Pinning: system under test on core 0, load generator and Mosquitto on core 1 (Mosquitto on core 0 when it is "
      "the system under test). Runs alternate between systems; each run starts a fresh system under test. A run during "
      f"which other processes used > {DISTURBED_PCT:.0f} % of a core is repeated (at most twice) and the last attempt is used.")
    fin = next((r for r in raw if "finished" in r), None)
    if fin:
        w(f"- Wall time of the scenarios: {fin['elapsed_s'] / 60:.1f} min (plus the release build, incremental)")
    w("")
    w("Cells are `median (min–max)` over the runs. Throughput is acknowledged readings per second (2.xx answers; for "
      "libcoap, which has no ingest resource, any answer — it answers 4.04 — and for limit-broker, messages received by the "
      "subscriber). Latency is CoAP request → answer (open loop: from the *scheduled* send time), and for limit-broker "
      "publish → receive. E2E is CoAP send → the reading received from Mosquitto by a QoS 1 subscriber. CPU is the system "
      "under test's CPU time per 1000 answered readings (for limit-broker: Mosquitto's, per 1000 messages). Peak RSS is "
      "VmHWM at the end of the run. Load-side CPU is the load generator's and Mosquitto's CPU in % of one core: "
      "they share core 1, so near 100 % the generator side, not the system under test, set the pace. Other-CPU is the "
      "busy time of processes other than the SUT, the load generator and Mosquitto, in % of one core.\n")
    w("Load: closed loop = 256 requests in flight (CoAP CON, SenML JSON unless named otherwise, one device per client "
      "socket, sockets added so no Message ID repeats within a run); open loop = a fixed rate with latency measured "
      "from each request's scheduled send time (coordinated-omission corrected). The generator does not retransmit: "
      "an answer missing after 2 s is a timeout. limit-udp is a stateless 2.01 answerer (the loopback ceiling); "
      "limit-broker is QoS 1 publish → Mosquitto → subscribe in one process, 256 in flight, wardgate-sized messages, "
      "Mosquitto alone on core 0; limit-broker-shared is the same with Mosquitto on core 1 beside that process, where "
      "it is in the e2e scenarios; "
      "libcoap is `coap-server-notls` answering 4.04 (a fast C CoAP server that does no forwarding); naive-bridge is "
      "`bench/peers/naive_bridge.py` (aiocoap + paho-mqtt, QoS 1, answers after PUBACK).\n")
    w("## Scenarios\n")
    w("| scenario | runs | throughput /s | p50 ms | p99 ms | max ms | e2e p99 ms | delivered | 5.03 / timeouts | CPU ms/1k | peak RSS MiB | load-side CPU % | other-CPU % |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = ["limit-udp", "limit-broker", "limit-broker-shared", "libcoap", "naive-bridge", "wardgate-ingest", "wardgate-ingest-flows",
             "wardgate-ingest-capture", "wardgate-ingest-anomalies", "wardgate-e2e-fsync",
             "wardgate-e2e-nofsync", "wardgate-e2e-cbor", "wardgate-e2e-non", "wardgate-e2e-20k-open",
             "wardgate-e2e-2k-open", "wardgate-e2e-broker-pace"]
    for sc in order:
        recs = by.get(sc, [])
        ok = [r["report"] for r in recs if "report" in r]
        errs = [r["error"] for r in recs if "error" in r]
        if not ok:
            if errs:
                w(f"| {sc} | 0 | failed: {errs[0][:120]} ||||||||||||")
            continue
        e2e = [x.get("e2e") for x in ok if x.get("e2e")]
        delivered = "–"
        if e2e:
            sent = sum(x["sent"] for x in ok)
            uniq = sum(x["unique"] for x in e2e)
            dups = sum(x["duplicates"] for x in e2e)
            delivered = f"{100.0 * uniq / max(sent, 1):.3f} %" + (f", {dups} dup" if dups else "")
        failures = "–"
        if ok[0].get("tool") == "coap-load":
            failures = f"{sum(x['busy_503'] for x in ok)} / {sum(x['timeouts'] for x in ok)}"
        w(f"| {sc} | {len(ok)}{' (' + str(attempts.get(sc, 0) - len(recs)) + ' repeated)' if attempts.get(sc, 0) > len(recs) else ''} "
          f"| {cell([throughput_of(x) for x in ok], 0)} "
          f"| {cell([latency_of(x).get('p50_ms') for x in ok])} | {cell([latency_of(x).get('p99_ms') for x in ok])} "
          f"| {cell([latency_of(x).get('max_ms') for x in ok])} "
          f"| {cell([((x.get('e2e') or {}).get('latency') or {}).get('p99_ms') for x in ok]) if e2e else '–'} "
          f"| {delivered} | {failures} "
          f"| {cell([x['cpu'].get('sut_cpu_ms_per_1k') for x in ok])} "
          f"| {cell([(x.get('sut_memory') or {}).get('vm_hwm_kb', 0) / 1024 for x in ok], 1)} "
          f"| {cell([load_side_pct(x) for x in ok], 0)} "
          f"| {cell([x['cpu'].get('other_cpu_pct') for x in ok], 0)} |")
    idle = [r["report"] for r in by.get("wardgate-idle", []) if "report" in r]
    w("")
    w("## Idle footprint\n")
    if idle:
        w(f"wardgate idle (CoAP + HTTP listeners, MQTT uplink connected, empty outbox), after 2 s: RSS "
          f"{cell([x['sut_memory']['rss_end_kb'] / 1024 for x in idle], 1)} MiB, peak (VmHWM) "
          f"{cell([x['sut_memory']['vm_hwm_kb'] / 1024 for x in idle], 1)} MiB, CPU "
          f"{cell([x['cpu']['sut_cpu_ms'] / x['duration_s'] for x in idle])} ms per second.")
    else:
        errs = [r.get("error") for r in by.get("wardgate-idle", [])]
        w(f"not measured{': ' + errs[0] if errs and errs[0] else ''}")
    for r in raw:
        if "not_measured" in r:
            w(f"\n- **{r['scenario']}**: not measured: {r['not_measured']}.")
    # LwM2M
    storm = {mode: [r for r in by.get(f"lwm2m-storm:{mode}", []) if "registered" in r]
             for mode in ("observed", "registered")}
    if any(storm.values()):
        w("\n## LwM2M registration storm (`bench/lwm2m.sh`)\n")
        w("Simulated clients (`wardgate-bench lwm2m-storm`, one socket each on 127.4.x.y, one thread) register "
          "with a release gateway as fast as it answers (256 in flight); with an `[[lwm2m.observe]]` rule the "
          "gateway then observes each one (`/3303/0/5700`) and each sends 5 Confirmable notifications in a "
          "closed loop, acknowledged only once durable. RSS per client = (RSS 2 s after the storm − RSS "
          "before) / registered clients; it includes the CoAP layer's deduplication state of the Register "
          "exchanges (~0.2 KB a client, kept for EXCHANGE_LIFETIME, 247 s). Not pinned to cores.\n")
        w("| mode | runs | clients | registrations /s | register p50 / p99 ms | observed | notifications /s | notify p50 / p99 ms | RSS per client |")
        w("|---|---|---|---|---|---|---|---|---|")
        for mode, recs in storm.items():
            if not recs:
                continue
            notif = (f"{cell([x['notifications_per_s'] for x in recs], 0)}" if mode == "observed" else "–")
            np = (f"{cell([x['notify_p50_ms'] for x in recs])} / {cell([x['notify_p99_ms'] for x in recs])}"
                  if mode == "observed" else "–")
            w(f"| {mode} | {len(recs)} | {recs[0]['clients']:,} | {cell([x['registrations_per_s'] for x in recs], 0)} | "
              f"{cell([x['register_p50_ms'] for x in recs])} / {cell([x['register_p99_ms'] for x in recs])} | "
              f"{cell([x['observed'] for x in recs], 0)} | {notif} | {np} | "
              f"{cell([x['rss_bytes_per_client'] / 1024 for x in recs], 2)} KiB |")
        regs = [x for recs in storm.values() for x in recs]
        w(f"\nTargets (issue 9): 10,000 registrations in < 10 s: "
          f"{cell([x['register_seconds'] for x in regs], 2)} s; ≤ 2 KB RSS per idle registered client: "
          f"{cell([x['rss_bytes_per_client'] for x in storm['registered']], 0)} bytes"
          + (" (registered only)." if storm['registered'] else "."))
    selector_section(w, by, raw_path)
    https_section(w, by, raw_path)
    # Ladder
    ladder = {sc.split(":", 1)[1]: recs for sc, recs in by.items() if sc.startswith("ladder:")}
    w("\n## Ladder (open loop, 10 s per step; a step passes with ≥ 99.9 % delivered and p99 ≤ 50 ms)\n")
    w("Delivered = readings delivered on MQTT (e2e systems) or acknowledged (others) out of those *scheduled*: "
      "a generator held back by a full in-flight window (4096) sends fewer, and those count as not delivered. "
      "p99 is the CoAP answer latency from the scheduled time, and for e2e systems also the end-to-end latency.\n")
    if ladder:
        w("| system | " + " | ".join(f"{r // 1000}k/s" for r in LADDER_RATES) + " | sustainable |")
        w("|---|" + "---|" * (len(LADDER_RATES) + 1))
        for system, recs in ladder.items():
            cells, best = [], None
            steps = {r["run"]: r for r in recs}
            for rate in LADDER_RATES:
                r = steps.get(rate)
                if r is None:
                    cells.append("")
                    continue
                rep = r.get("report")
                if not rep:
                    cells.append("error")
                    continue
                e2e = rep.get("e2e")
                delivered = (e2e["unique"] if e2e else rep["ok"] or rep["responses"]) / scheduled(r)
                p99 = latency_of(rep).get("p99_ms")
                e2e_p99 = ((e2e or {}).get("latency") or {}).get("p99_ms")
                passed = ladder_pass(r)
                if passed:
                    best = rate
                cells.append(f"{'✔' if passed else '✘'} {100 * delivered:.2f} %, p99 {fmt(p99)}"
                             + (f" / e2e {fmt(e2e_p99)}" if e2e else "") + " ms")
            w(f"| {system} | " + " | ".join(cells) + f" | {'< 1k' if best is None else f'{best:,}'}/s |")
    else:
        w("not run (quick mode or --no-ladder).")
    # Soak
    w("\n## Soak\n")
    soak = [r for r in by.get("soak", []) if "report" in r]
    if soak:
        rep = soak[-1]["report"]
        mem = rep["sut_memory"]
        e2e = rep.get("e2e") or {}
        rule = (soak[-1].get("mode") or {}).get("rate_rule", "half of wardgate-e2e-fsync's median acknowledged rate")
        w(f"{SOAK_S} s open loop at {fmt(rep['rate_target'], 0)} readings/s ({rule}), "
          f"durable outbox, MQTT QoS 1: RSS start {mem['rss_start_kb'] / 1024:.1f} MiB, end {mem['rss_end_kb'] / 1024:.1f} MiB, "
          f"max {mem['rss_max_kb'] / 1024:.1f} MiB, slope {mem['rss_slope_kb_per_min'] / 1024:+.3f} MiB/min; "
          f"delivered {100 * e2e.get('delivery_ratio', 0):.3f} %, duplicates {e2e.get('duplicates', 0)}, "
          f"p99 ack {fmt(latency_of(rep).get('p99_ms'))} ms, p99 e2e {fmt((e2e.get('latency') or {}).get('p99_ms'))} ms, "
          f"CPU {fmt(rep['cpu'].get('sut_cpu_ms_per_1k'))} ms/1k, other-CPU {fmt(rep['cpu']['other_cpu_pct'], 0)} %.")
        series = mem.get("rss_series") or []
        late = [(t, kb) for t, kb in series if t >= 60]
        if len(late) >= 2:
            n = len(late)
            mx = sum(t for t, _ in late) / n
            my = sum(kb for _, kb in late) / n
            den = sum((t - mx) ** 2 for t, _ in late)
            slope = sum((t - mx) * (kb - my) for t, kb in late) / den * 60 / 1024 if den else 0.0
            w(f"\nAfter the first minute (warm-up: caches filling to their configured bounds) the RSS slope is "
              f"{slope:+.3f} MiB/min.")
        if series:
            pts = series[:: max(1, len(series) // 12)]
            w("\nRSS over time (s → MiB): " + ", ".join(f"{t:.0f}→{kb / 1024:.1f}" for t, kb in pts))
    else:
        errs = [r.get("error") or r.get("not_measured") for r in by.get("soak", [])]
        w("not run (quick mode or --no-soak)." if not errs else f"failed: {errs[0]}")
    # Ratios and targets
    w("\n## Ratios and targets\n")

    h = headline(by)
    wg, wg_e2e, ing, broker, naive, libcoap, udp = (h[k] for k in (
        "e2e_acked", "e2e_delivered", "ingest", "limit_broker", "naive_bridge", "libcoap", "limit_udp"))
    p99_ack, p99_e2e, idle_rss, cpu = h["p99_ack_20k"], h["p99_e2e_20k"], h["idle_rss"], h["cpu_e2e"]

    def ratio(a, b):
        return a / b if a is not None and b else None

    def overhead(with_monitor, without):
        return 1.0 - with_monitor / without if with_monitor is not None and without else None

    rows = [
        ("wardgate e2e (fsync) acked/s / limit-broker", ratio(wg, broker), ">= 0.75", lambda v: v >= 0.75),
        ("wardgate e2e (fsync) delivered/s / limit-broker (Mosquitto alone on core 0)", ratio(wg_e2e, broker),
         ">= 0.8", lambda v: v >= 0.8),
        ("wardgate e2e (fsync) delivered/s / limit-broker-shared (Mosquitto on core 1 with its clients, as in e2e)",
         ratio(wg_e2e, h["limit_broker_shared"]), ">= 0.8", lambda v: v >= 0.8),
        ("open loop at 0.85 x limit-broker-shared (broker pace): delivered/s / limit-broker-shared",
         ratio(h["pace_delivered"], h["limit_broker_shared"]), ">= 0.8", lambda v: v >= 0.8),
        ("open loop at broker pace: p99 e2e, ms (no growing backlog)", h["pace_p99_e2e"], "<= 1000",
         lambda v: v <= 1000),
        ("wardgate e2e (fsync) / naive-bridge (acked/s)", ratio(wg, naive), ">= 15", lambda v: v >= 15),
        ("wardgate ingest / libcoap (ack rate)", ratio(ing, libcoap), ">= 0.8", lambda v: v >= 0.8),
        ("wardgate ingest / limit-udp", ratio(ing, udp), "(context)", None),
        ("monitor overhead, flow records: 1 - ingest-flows / ingest (ack rate)",
         overhead(h["ingest_flows"], ing), "<= 0.15", lambda v: v <= 0.15),
        ("monitor overhead, flows + pcapng capture: 1 - ingest-capture / ingest (ack rate)",
         overhead(h["ingest_capture"], ing), "<= 0.35", lambda v: v <= 0.35),
        ("monitor overhead, flows + anomaly detectors: 1 - ingest-anomalies / ingest (ack rate)",
         overhead(h["ingest_anomalies"], ing), "(context)", None),
        ("CPU per 1k readings, ingest / + flows / + flows and capture, ms",
         None if h["cpu_ingest"] is None else " / ".join(
             "–" if v is None else f"{v:.1f}"
             for v in (h["cpu_ingest"], h["cpu_ingest_flows"], h["cpu_ingest_capture"])), "(context)", None),
        ("wardgate e2e (fsync) delivered/s / acked/s", ratio(wg_e2e, wg), "(context)", None),
        ("p99 ack at 20k/s open loop, ms", p99_ack, "<= 5", lambda v: v <= 5),
        ("p99 e2e at 20k/s open loop, ms", p99_e2e, "<= 20", lambda v: v <= 20),
        ("idle RSS, MiB", idle_rss, "<= 16", lambda v: v <= 16),
        ("peak RSS at saturation (e2e fsync), MiB", h["rss_e2e"], "<= 64", lambda v: v <= 64),
        ("CPU per 1k readings (e2e fsync), ms", cpu, "<= 5", lambda v: v <= 5),
        ("CPU per reading at 2k/s open loop / at saturation (e2e fsync)", ratio(h["cpu_2k"], cpu), "<= 2",
         lambda v: v <= 2),
    ]
    w("| measure | value | target | met |")
    w("|---|---|---|---|")
    for name, v, target, ok in rows:
        met = "–" if v is None or ok is None else ("yes" if ok(v) else "**no**")
        w(f"| {name} | {fmt(v)} | {target} | {met} |")
    w("\nRatios use medians of throughput (acknowledged readings/s; limit-broker: messages/s).")
    base_path = Path(raw_path).parent / "baseline" / "results.jsonl"
    if base_path.exists():
        before_after(w, final_records(read_raw(base_path)), by, base_path)
    micro = Path(raw_path).with_name("hot_path.txt")
    if micro.exists():
        w("\n## Micro-benchmarks (criterion, `cargo bench -p wardgate-bench --bench hot_path`)\n")
        w("```\n" + micro.read_text().strip() + "\n```")
    profiles = sorted(Path(raw_path).parent.glob("profile-*.txt"))
    if profiles:
        w("\n## Profile\n")
        for pr in profiles:
            head = pr.read_text().splitlines()
            w(f"`docs/bench-raw/{pr.name}` ({head[0].lstrip('# ')}); top inclusive shares:\n")
            w("```")
            body = [l for l in head if l[:1].isdigit()]
            w("\n".join(body[:25]))
            w("```")
    w("\n## Reproduce\n")
    w("`bench/run.sh` (full, about 15 min on this machine, rewrites this file and `docs/bench-raw/`) or "
      "`bench/run.sh --quick` (smoke check, 1 short run per scenario, writes to a temp dir). Single runs: "
      "`target/release/wardgate-bench coap-load --help`, `udp-echo`, `broker-limit`, `sample`.")
    # Containers and split mode: measured by bench/deploy.sh, which writes this section.
    deploy = Path(raw_path).with_name("deploy.md")
    if deploy.exists():
        w("\n" + deploy.read_text().rstrip())
    # The NATS cluster with 1, 2 and 3 JetStream workers: bench/cluster.sh writes it.
    cluster = Path(raw_path).with_name("cluster.md")
    if cluster.exists():
        w(cluster.read_text().rstrip())
    notes = Path(raw_path).with_name("notes.md")
    if notes.exists():
        w("\n" + notes.read_text())
    Path(out_path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    log(f"report written to {out_path}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--quick", action="store_true")
    r.add_argument("--runs", type=int, default=5)
    r.add_argument("--only", default="")
    r.add_argument("--duration", type=float, default=None,
                   help="seconds per closed-loop run (default 3; 1.5 with --quick)")
    r.add_argument("--no-ladder", action="store_true")
    r.add_argument("--no-soak", action="store_true")
    r.add_argument("--no-extras", action="store_true",
                   help="skip the LwM2M storm, selector and HTTPS scenarios (A/B runs of --only scenarios)")
    r.add_argument("--no-profile", action="store_true")
    r.add_argument("--lwm2m-only", action="store_true",
                   help="only the LwM2M storm, appended to the results already in --out")
    r.add_argument("--selector-only", action="store_true",
                   help="only the selector scenarios (bench/selector.sh), appended to the results already in --out")
    r.add_argument("--https-only", action="store_true",
                   help="only the HTTPS uplink and ingest scenarios (bench/https.sh), appended to the results already in --out")
    r.add_argument("--soak-only", action="store_true",
                   help="only the soak, appended to the results already in --out (after a full run)")
    r.add_argument("--bench-bin", required=True)
    r.add_argument("--wardgate-bin", required=True)
    r.add_argument("--venv-python", required=True)
    r.add_argument("--command-line", default="")
    p = sub.add_parser("report")
    p.add_argument("--raw", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--command-line", default="")
    a = ap.parse_args()
    if a.cmd == "run":
        Bench(a).run_all()
    else:
        report(a.raw, a.out, a.command_line)


if __name__ == "__main__":
    main()
