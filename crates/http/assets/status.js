// wardgate status page: refreshes the server-rendered panels, runs the live feed and the admin
// actions. Plain JavaScript, no libraries, nothing loaded from elsewhere.
// The token the operator types stays in this tab's sessionStorage and is sent only as an
// Authorization header to this gateway; it never goes into a URL.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const KEY = "wardgate.token";
  let token = sessionStorage.getItem(KEY) || "";
  let feed = null; // AbortController of the running feed

  function showToken() {
    const st = $("token-state");
    st.classList.remove("error");
    st.textContent = token
      ? "Token set for this tab. Live feed and actions enabled (the gateway decides what the token may do)."
      : "Read-only: no token. The live feed and the actions need one.";
  }

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  // ---- panels -------------------------------------------------------------------------------
  async function refresh() {
    try {
      const r = await fetch("/status/v1/panels", { cache: "no-store" });
      if (r.ok) {
        const html = await r.text();
        const panels = $("panels");
        if (panels.innerHTML !== html) panels.innerHTML = html;
      }
    } catch (e) {
      // The gateway is restarting or unreachable: keep the last picture.
    }
  }

  // ---- live feed (Server-Sent Events read with fetch, so the token goes in a header) --------
  function feedState(text, error) {
    const st = $("feed-state");
    st.textContent = text;
    st.classList.toggle("error", !!error);
  }

  function alarm(reading) {
    const b = $("alarm-banner");
    const rec = (reading.records || [])
      .map((r) => r.n + " " + (r.v !== undefined ? r.v : r.vs !== undefined ? r.vs : r.vb) + (r.u ? " " + r.u : ""))
      .join(", ");
    b.textContent = "ALARM " + reading.device + ": " + rec;
    b.hidden = false;
  }

  function show(reading) {
    const li = document.createElement("li");
    li.className = reading.class;
    const dev = document.createElement("span");
    dev.className = "dev";
    dev.textContent = reading.device;
    li.appendChild(dev);
    const rec = (reading.records || [])
      .map((r) => r.n + "=" + (r.v !== undefined ? r.v : r.vs !== undefined ? r.vs : r.vb !== undefined ? r.vb : "") + (r.u ? " " + r.u : ""))
      .join("  ");
    li.appendChild(document.createTextNode(" [" + reading.class + "] " + rec + " · " + reading.protocol));
    const list = $("feed-list");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > 50) list.removeChild(list.lastChild);
    if (reading.class === "alarm") alarm(reading);
  }

  async function startFeed(ev) {
    ev.preventDefault();
    stopFeed();
    if (!token) {
      feedState("The live feed needs a token (admin or viewer).", true);
      return;
    }
    const q = new URLSearchParams();
    const d = $("feed-device").value.trim();
    const c = $("feed-class").value;
    if (d) q.set("device", d);
    if (c) q.set("class", c);
    const ctl = new AbortController();
    feed = ctl;
    let r;
    try {
      r = await fetch("/status/v1/feed?" + q.toString(), {
        headers: headers({ Accept: "text/event-stream" }),
        signal: ctl.signal,
        cache: "no-store",
      });
    } catch (e) {
      if (feed === ctl) feedState("Cannot reach the gateway.", true);
      return;
    }
    if (!r.ok) {
      let msg = "HTTP " + r.status;
      try { msg += ": " + (await r.json()).error; } catch (e) { /* not JSON */ }
      feedState("Live feed refused (" + msg + ").", true);
      feed = null;
      return;
    }
    feedState("Live: readings appear as they are stored.");
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let event = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (event === "reading" && data.length) {
            try { show(JSON.parse(data.join("\n"))); } catch (e) { /* skip a bad event */ }
          } else if (event === "dropped") {
            feedState("The gateway dropped this feed: the page fell too far behind. Start it again.", true);
          }
        }
      }
      if (feed === ctl) feedState("The feed ended (the gateway closed it).", true);
    } catch (e) {
      if (feed === ctl) feedState("The feed was interrupted.", true);
    }
  }

  function stopFeed() {
    if (feed) {
      const f = feed;
      feed = null;
      f.abort();
      feedState("Stopped.");
    }
  }

  // ---- admin actions ------------------------------------------------------------------------
  function result(text, error, detail) {
    const el = $("action-result");
    el.textContent = text;
    el.classList.toggle("error", !!error);
    if (detail) {
      const pre = document.createElement("pre");
      pre.textContent = detail;
      el.appendChild(pre);
    }
  }

  // Sent with or without a token: the gateway decides, and says why it refused.
  async function call(method, path, body, what) {
    let r;
    try {
      r = await fetch(path, {
        method: method,
        headers: headers(body ? { "Content-Type": "application/json" } : {}),
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (e) {
      result(what + ": cannot reach the gateway.", true);
      return;
    }
    let json = null;
    try { json = await r.json(); } catch (e) { /* empty body */ }
    if (r.ok) {
      result(what + ": done (HTTP " + r.status + ").", false, json ? JSON.stringify(json, null, 2) : "");
      refresh();
    } else {
      result(what + ": refused, HTTP " + r.status + (json && json.error ? ": " + json.error : "") + ".", true);
    }
  }

  function device() {
    return encodeURIComponent($("revoke-device").value.trim());
  }

  function init() {
    showToken();
    $("token").value = "";
    $("token-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      token = $("token").value.trim();
      $("token").value = "";
      if (token) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY);
      showToken();
    });
    $("token-forget").addEventListener("click", () => {
      token = "";
      sessionStorage.removeItem(KEY);
      stopFeed();
      showToken();
    });
    $("feed-form").addEventListener("submit", startFeed);
    $("feed-stop").addEventListener("click", stopFeed);
    $("alarm-banner").addEventListener("click", () => { $("alarm-banner").hidden = true; });
    $("revoke-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      call("POST", "/admin/v1/devices/" + device() + "/revoke", null, "Revoke " + $("revoke-device").value);
    });
    $("restore").addEventListener("click", () => {
      call("POST", "/admin/v1/devices/" + device() + "/restore", null, "Restore " + $("revoke-device").value);
    });
    $("capture-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const s = parseInt($("capture-seconds").value, 10) || 60;
      call("POST", "/admin/v1/captures", { duration: s + "s" }, "Start capture");
    });
    $("capture-stop").addEventListener("click", () => {
      call("DELETE", "/admin/v1/captures/current", null, "Stop capture");
    });
    $("lwm2m-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const ep = encodeURIComponent($("lwm2m-endpoint").value.trim());
      call("POST", "/admin/v1/lwm2m/clients/" + ep + "/operations",
        { op: "read", path: $("lwm2m-path").value.trim() }, "LwM2M read");
    });
    setInterval(refresh, 2000);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
